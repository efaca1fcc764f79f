"""axnb: find and fix the accuracy a network loses when quantized for an NPU.

The engine (this package minus ``axnb.view`` and ``axnb.widgets``) imports only numpy, onnx and
onnxruntime; UI libraries are imported lazily by the view and widget layers.
"""

from axnb.errors import AxnbError, ConfigError, DataError, ModelError, ZooError
from axnb.types import CalibMethod, Method, Mode, QType

__version__ = "0.1.0"

__all__ = [
    "AxnbError",
    "CalibMethod",
    "ConfigError",
    "DataError",
    "Method",
    "Mode",
    "ModelError",
    "QType",
    "ZooError",
    "__version__",
]
