"""Enums spelled as Pulsar2 spells them, and small value types shared by the engine.

Strings are accepted at the edges (config files, CLI, widgets) and turned into these Enums at
once with :func:`parse_enum`, which raises a :class:`~axnb.errors.ConfigError` naming the valid
spellings.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple, TypeVar

import numpy as np

from axnb.errors import ConfigError, did_you_mean


class _Str(str, Enum):
    def __str__(self) -> str:
        return self.value


class QType(_Str):
    """Quantized data type of a tensor (activations) or a weight."""

    U8 = "U8"
    S8 = "S8"
    S4 = "S4"
    U16 = "U16"
    S16 = "S16"
    FP32 = "FP32"

    @property
    def bits(self) -> int:
        return {"U8": 8, "S8": 8, "S4": 4, "U16": 16, "S16": 16, "FP32": 32}[self.value]

    @property
    def signed(self) -> bool:
        return self.value.startswith("S")

    @property
    def is_float(self) -> bool:
        return self is QType.FP32


class Rounding(_Str):
    """How a weight's values are rounded onto its grid (:mod:`axnb.recover`)."""

    nearest = "nearest"
    AdaRound = "AdaRound"
    GPTQ = "GPTQ"


class WeightFix(NamedTuple):
    """A weight-side recovery of one weight (:mod:`axnb.recover`): how its values are rounded,
    whether its per-channel scales are searched (EasyQuant's weight half) and whether its
    bias absorbs the mean output error (bias correction).

    Example:
        >>> WeightFix(Rounding.GPTQ, bias=True).label
        'GPTQ + bias correction'
    """

    rounding: Rounding = Rounding.nearest
    scales: bool = False
    bias: bool = False

    @property
    def label(self) -> str:
        parts = [self.rounding.value] if self.rounding is not Rounding.nearest else []
        parts += ["scale search"] * self.scales + ["bias correction"] * self.bias
        return " + ".join(parts) or "round to nearest"

    @property
    def is_identity(self) -> bool:
        return self == WeightFix()

    @property
    def value(self) -> str:
        """The label (a tuner move's serialized value; ``axnb.recover.parse_fix`` reads it)."""
        return self.label


class CalibMethod(_Str):
    """How a tensor's quantization range is chosen from calibration statistics."""

    MinMax = "MinMax"
    MSE = "MSE"
    Percentile = "Percentile"
    KL = "KL"


class Method(_Str):
    """Precision-analysis method (Pulsar2 ``precision_analysis_method``)."""

    PerLayer = "PerLayer"
    EndToEnd = "EndToEnd"


class Mode(_Str):
    """Precision-analysis mode (Pulsar2 ``precision_analysis_mode``).

    ``Backend`` is spelled ``NPUBackend`` in Pulsar2 configs; both spellings are accepted.
    """

    Reference = "Reference"
    Backend = "NPUBackend"


class Fusion(_Str):
    """Where quantizers go (axnb's ``quant.fusion``, an extension of the Pulsar2 schema).

    ``npu``: at the boundaries of fused operator groups, as NPU compilers deploy them (Conv/Gemm/
    MatMul + bias + Relu/Clip/LeakyRelu; LayerNorm, RMSNorm, GELU, SiLU, HardSwish, Mish written
    out as elementwise ops; additive attention masks stay float up to their Softmax).
    ``ort``: exactly the tensors onnxruntime's QDQ quantizer quantizes (inputs and outputs of the
    ops in its QDQ registry). ``none``: every float tensor (axnb before 0.2).
    """

    npu = "npu"
    ort = "ort"
    none = "none"


class DataFormat(_Str):
    """Calibration data format (Pulsar2 ``calibration_format``)."""

    Image = "Image"
    Numpy = "Numpy"
    Binary = "Binary"
    NumpyObject = "NumpyObject"


class TensorFormat(_Str):
    """Colour order of an image tensor (Pulsar2 ``tensor_format`` / ``src_format``)."""

    BGR = "BGR"
    RGB = "RGB"
    GRAY = "GRAY"
    AutoColorSpace = "AutoColorSpace"


class Layout(_Str):
    """Memory layout of an image tensor."""

    NCHW = "NCHW"
    NHWC = "NHWC"


class SrcDType(_Str):
    """Data type the deployed model's input receives (Pulsar2 ``src_dtype``)."""

    U8 = "U8"
    FP32 = "FP32"


class TensorSpec(NamedTuple):
    """Name, static shape and numpy dtype of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


_ALIASES = {"Backend": "NPUBackend"}
E = TypeVar("E", bound=Enum)


def parse_enum(enum: type[E], value: object, where: str = "") -> E:
    """Turn a user string into ``enum``; a bad value is a ConfigError naming the choices.

    Example:
        >>> parse_enum(CalibMethod, "MSE")
        <CalibMethod.MSE: 'MSE'>
        >>> parse_enum(Mode, "Backend")
        <Mode.Backend: 'NPUBackend'>
    """
    if isinstance(value, enum):
        return value
    choices = [m.value for m in enum]
    if isinstance(value, str):
        value = _ALIASES.get(value, value) if enum is Mode else value
        if value in choices:
            return enum(value)
        folded = {c.lower(): c for c in choices}
        if value.lower() in folded:
            return enum(folded[value.lower()])
    prefix = f"{where}: " if where else ""
    raise ConfigError(f"{prefix}invalid value {value!r}{did_you_mean(str(value), choices)}")


class Col:
    """Column names of the result tables, spelled as Pulsar2 prints them (``Cosin`` included).

    Rows of every table are keyed by these constants; the display strings live only here.
    """

    OPERATOR = "Operator"
    TYPE = "Type"
    OUTPUT = "Output Tensor"
    ORIGINAL = "Original Tensor"
    SHAPE = "Shape"
    DTYPE = "DType"
    QDTYPE = "QDType"
    COSINE = "Cosin"
    MSE = "MSE"
    SQNR = "SQNR"
    MAXABS = "MaxAbs"
    SOURCE = "Source"
    RVB = "Ref vs Backend Cosin"
    MEMBERS = "Members"
    RMS = "Float RMS"
    METRICS = (COSINE, MSE, SQNR, MAXABS)
    LAYER_TABLE = (OPERATOR, TYPE, OUTPUT, ORIGINAL, SHAPE, DTYPE, QDTYPE, COSINE, MSE, SQNR,
                   MAXABS, SOURCE)
    # NOTE: the tensor tables (EndToEnd / PerLayer) also say each float tensor's magnitude:
    # a near-silent tensor's cosine is not ranked (axnb.metrics.SILENT_TENSOR)
    TENSOR_TABLE = (*LAYER_TABLE[:11], RMS, SOURCE)

# NOTE: the built-in task metrics (axnb.taskmetrics defines them; the config validates names
# against this list without importing the evaluation engine).
TASK_METRICS = ("top1", "topk", "agreement", "iou", "mae", "nn_agreement")
