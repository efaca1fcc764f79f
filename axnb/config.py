"""Pulsar2-compatible build configs: load, validate, override and save.

The file format is Pulsar2's ``pulsar2 build --config`` JSON, with ``//``, ``/* */`` and ``#``
comments allowed outside strings. Inside axnb a config is a tree of frozen dataclasses holding
Enums; strings exist only in the file. Unknown keys, wrong types and bad values raise a one-line
:class:`~axnb.errors.ConfigError` naming the JSON path and what would be valid.

Defaults follow the Pulsar2 config reference (pulsar2-docs ``user_guides_config/config``: the
annotated JSON and the ``BuildConfig`` proto): calibration_format Image, calibration_size 32
(-1 = all), calibration_method MinMax, precision_analysis false, precision_analysis_method
PerLayer, precision_analysis_mode Reference, enable_smooth_quant false, conv_bias_data_type S32,
layer data_type U8, tensor_format AutoColorSpace (BGR for 3-channel images, GRAY for 1),
tensor_layout NCHW, src_dtype FP32. smooth_quant_threshold 0.2 and smooth_quant_strength 0.6
are the values of Pulsar2's reference JSON (the doc states no default). src_format / src_layout
``None`` mean "same as tensor_format / tensor_layout".

Pulsar2 keys axnb does not simulate (``npu_mode``, ``compiler``, ``quant.transformer_opt_level``,
``input_processors[].csc_mode`` ...) are accepted, kept in :attr:`Config.extra` under their
dotted path, written back on save, and listed by :attr:`Config.ignored`.

One block is axnb's own: ``"evaluation": {"metric": "top1", "labels": "labels.json", ...}``
(:class:`EvaluationConfig`), the task metric measured next to the cosine; its keys are
validated like the rest (unknown keys rejected).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from axnb.errors import ConfigError, did_you_mean, nearest
from axnb.files import write_text
from axnb.types import (
    TASK_METRICS,
    CalibMethod,
    DataFormat,
    Fusion,
    Layout,
    Method,
    Mode,
    QType,
    Rounding,
    SrcDType,
    TensorFormat,
    parse_enum,
)

__all__ = [
    "DEFAULT", "Config", "EvaluationConfig", "FrozenMap", "InputConfig", "InputProcessor",
    "LayerConfig", "OutputProcessor", "QuantConfig", "format_input_shapes", "load_config",
    "parse_input_shapes", "save_config",
]

DEFAULT = "DEFAULT"

_TOP_IGNORED = ("work_dir", "model_type", "target_hardware", "npu_mode", "onnx_opt", "compiler",
                "const_processors", "op_processors", "quant_op_processors")
_QUANT_IGNORED = ("highest_mix_precision", "ln_scale_data_type", "refine_weight_threshold",
                  "transformer_opt_level", "check", "disable_auto_refine_scale",
                  "disable_quant_optimization", "finetune_epochs", "finetune_block_size",
                  "finetune_batch_size", "finetune_lr", "device")
_LAYER_IGNORED = ("output_data_type",)
_IN_PROC_IGNORED = ("src_extra_shapes", "csc_mode", "csc_mat", "padding", "padding_mode",
                    "padding_constant_value", "slicing")
_OUT_PROC_IGNORED = ("tensor_layout", "output_dtype")

_ENUM_FIELDS: dict[str, type[Enum]] = {
    "calibration_format": DataFormat, "calibration_method": CalibMethod,
    "precision_analysis_method": Method, "precision_analysis_mode": Mode,
    "data_type": QType, "weight_data_type": QType, "tensor_format": TensorFormat,
    "src_format": TensorFormat, "tensor_layout": Layout, "src_layout": Layout,
    "src_dtype": SrcDType, "fusion": Fusion, "weight_rounding": Rounding,
}
_SELECTORS = ("layer_names", "op_types", "start_tensor_names", "end_tensor_names")
# NOTE: "zoo:minilm" or "https://..." name a resource, not a file; a drive letter is one char.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


class FrozenMap(Mapping):
    """A read-only mapping that keeps the frozen dataclasses hashable; equal to an equal dict."""

    __slots__ = ("_d",)

    def __init__(self, items: Mapping | Any = ()) -> None:
        self._d = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        # NOTE: values may be lists (verbatim JSON); hashing keys only stays consistent with ==.
        return hash(frozenset(self._d))

    def __repr__(self) -> str:
        return repr(self._d)


class _Frozen:
    def __post_init__(self) -> None:
        # NOTE: code may build these with lists and strings; normalise them so that equality and
        # hashing match a config loaded from a file.
        for f in fields(self):
            value = getattr(self, f.name)
            enum = _ENUM_FIELDS.get(f.name)
            if isinstance(value, list):
                value = tuple(value)
            elif enum is not None and isinstance(value, str) and not isinstance(value, Enum):
                value = parse_enum(enum, value, f"{type(self).__name__}.{f.name}")
            object.__setattr__(self, f.name, value)


@dataclass(frozen=True)
class InputConfig(_Frozen):
    """Calibration data of one model input (``quant.input_configs[]``); ``DEFAULT`` = all."""

    tensor_name: str = DEFAULT
    calibration_dataset: str | None = None
    calibration_format: DataFormat = DataFormat.Image
    calibration_size: int = 32
    calibration_mean: tuple[float, ...] | None = None
    calibration_std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class LayerConfig(_Frozen):
    """One ``quant.layer_configs[]`` entry; singular Pulsar2 keys are folded into the tuples.

    ``start_tensor_names == end_tensor_names == ("DEFAULT",)`` selects the whole model.
    """

    layer_names: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    start_tensor_names: tuple[str, ...] = ()
    end_tensor_names: tuple[str, ...] = ()
    data_type: QType = QType.U8
    weight_data_type: QType | None = None


@dataclass(frozen=True)
class QuantConfig(_Frozen):
    """The ``quant`` section: calibration, precision analysis, SmoothQuant, mixed precision."""

    input_configs: tuple[InputConfig, ...] = ()
    calibration_method: CalibMethod = CalibMethod.MinMax
    precision_analysis: bool = False
    precision_analysis_method: Method = Method.PerLayer
    precision_analysis_mode: Mode = Mode.Reference
    input_sample_dir: str | None = None
    enable_smooth_quant: bool = False
    smooth_quant_threshold: float = 0.2
    smooth_quant_strength: float = 0.6
    conv_bias_data_type: str = "S32"
    layer_configs: tuple[LayerConfig, ...] = ()
    fusion: Fusion = Fusion.npu
    # NOTE: Pulsar2's weight-side keys (axnb.recover.PULSAR2_KEYS says what axnb runs for each)
    enable_adaround: bool = False
    enable_easy_quant: bool = False
    enable_brecq: bool = False
    enable_lsq: bool = False
    # NOTE: axnb extensions: optimized rounding (nearest / AdaRound / GPTQ), bias correction
    weight_rounding: Rounding = Rounding.nearest
    enable_bias_correction: bool = False
    enable_equalization: bool = False


@dataclass(frozen=True)
class InputProcessor(_Frozen):
    """How a deployed input differs from the model input; ``src_*`` of ``None`` = ``tensor_*``."""

    tensor_name: str = DEFAULT
    tensor_format: TensorFormat = TensorFormat.AutoColorSpace
    tensor_layout: Layout = Layout.NCHW
    src_format: TensorFormat | None = None
    src_layout: Layout | None = None
    src_dtype: SrcDType = SrcDType.FP32
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class OutputProcessor(_Frozen):
    """An output permutation (``output_processors[]``)."""

    tensor_name: str = DEFAULT
    dst_perm: tuple[int, ...] | None = None


@dataclass(frozen=True)
class EvaluationConfig(_Frozen):
    """axnb's ``evaluation`` block (an extension, not Pulsar2): the task metric of
    :meth:`axnb.Workbench.evaluate` and ``axnb build`` (:mod:`axnb.taskmetrics`).

    ``metric``: a built-in name (``top1``, ``topk``, ``agreement``, ``iou``, ``mae``,
    ``nn_agreement``) or ``"package.module:function"``; ``labels``: a JSON file, sample file
    name -> label; ``dataset``: the labelled samples (read like ``quant.input_sample_dir``;
    default: the analysis samples); ``output``: the model output scored (default: the first);
    ``k`` (topk), ``threshold`` (iou); ``max_drop``: the accepted drop, in the metric's units
    (0.01 = 1 point of top-1), used by the verdict.
    """

    metric: str = "top1"
    labels: str | None = None
    dataset: str | None = None
    output: str | None = None
    k: int = 5
    threshold: float = 0.5
    max_drop: float | None = None


@dataclass(frozen=True)
class Config(_Frozen):
    """A whole build config. ``extra`` holds accepted-but-unsimulated keys by dotted path.

    ``base_dir`` is the config file's folder: relative paths resolve against it. It is neither
    saved nor compared.
    """

    input: str | None = None
    output_dir: str | None = None
    output_name: str | None = None
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=FrozenMap)
    quant: QuantConfig = field(default_factory=QuantConfig)
    input_processors: tuple[InputProcessor, ...] = ()
    output_processors: tuple[OutputProcessor, ...] = ()
    evaluation: EvaluationConfig | None = None
    extra: Mapping[str, Any] = field(default_factory=FrozenMap)
    base_dir: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        shapes = self.input_shapes
        if isinstance(shapes, str):
            shapes = parse_input_shapes(shapes)
        set_ = object.__setattr__
        set_(self, "input_shapes", FrozenMap((k, tuple(v)) for k, v in shapes.items()))
        set_(self, "extra", FrozenMap(copy.deepcopy(dict(self.extra))))
        if self.base_dir is not None:
            set_(self, "base_dir", Path(self.base_dir))

    @property
    def ignored(self) -> tuple[str, ...]:
        """Dotted paths (sorted) of the Pulsar2 keys that were kept but are not simulated."""
        return tuple(sorted(self.extra))

    def input_processor(self, name: str) -> InputProcessor:
        """The processor of input ``name``: exact entry, else ``DEFAULT``, else the defaults.

        Example:
            >>> cfg = load_config({"input_processors": [{"tensor_format": "RGB"}]})
            >>> cfg.input_processor("x").tensor_format, cfg.input_processor("x").tensor_name
            (<TensorFormat.RGB: 'RGB'>, 'DEFAULT')
        """
        return _lookup(self.input_processors, name) or InputProcessor()

    def input_config(self, name: str) -> InputConfig | None:
        """The calibration config of input ``name``: exact entry, else ``DEFAULT``, else None.

        Example:
            >>> cfg = load_config({"quant": {"input_configs": [{"calibration_size": 8}]}})
            >>> cfg.input_config("x").calibration_size
            8
        """
        return _lookup(self.quant.input_configs, name)

    def resolve_path(self, p: str | None) -> Path | None:
        """``p`` resolved against :attr:`base_dir` (absolute and ``scheme:`` paths unchanged).

        Example:
            >>> Config(base_dir=Path("/cfg")).resolve_path("data/calib").as_posix()
            '/cfg/data/calib'
        """
        if p is None:
            return None
        path = Path(p).expanduser()
        if path.is_absolute() or self.base_dir is None or _SCHEME.match(p):
            return path
        return self.base_dir / path

    def with_overrides(self, overrides: Mapping[str, object]) -> Config:
        """A copy with dotted keys set, validated like a file (CLI ``--quant.x`` style).

        String values are read as JSON when they parse (``"true"``, ``"64"``, ``"[1, 2]"``),
        else kept as text; quote a string that looks like a number (``'"13"'``). Keys may index
        lists: ``quant.input_configs[0].calibration_size``.

        Example:
            >>> cfg = load_config({}).with_overrides({"quant.calibration_method": "MSE",
            ...                                       "quant.precision_analysis": "true"})
            >>> cfg.quant.calibration_method, cfg.quant.precision_analysis
            (<CalibMethod.MSE: 'MSE'>, True)
        """
        data = self.to_dict()
        for key, value in overrides.items():
            _set_path(data, key, _parse_value(value), create=True)
        return _Loader().config(data, self.base_dir)

    def rebased(self, folder: str | Path) -> Config:
        """A copy whose relative paths point at the same files from ``folder``.

        :func:`save_config` writes paths as they are; call this first when saving elsewhere.

        Example:
            >>> cfg = Config(quant=QuantConfig(input_sample_dir="s"), base_dir=Path("/a/cfg"))
            >>> cfg.rebased("/a/out").quant.input_sample_dir
            '../cfg/s'
        """
        folder, base = Path(folder), self.base_dir or Path.cwd()

        def move(p: str | None) -> str | None:
            if p is None or Path(p).is_absolute() or _SCHEME.match(p):
                return p
            try:
                return os.path.relpath(base / p, folder)
            except ValueError:  # NOTE: another drive on Windows
                return str((base / p).resolve())

        q = self.quant
        inputs = tuple(replace(c, calibration_dataset=move(c.calibration_dataset))
                       for c in q.input_configs)
        quant = replace(q, input_configs=inputs, input_sample_dir=move(q.input_sample_dir))
        ev = self.evaluation and replace(self.evaluation, labels=move(self.evaluation.labels),
                                         dataset=move(self.evaluation.dataset))
        return replace(self, input=move(self.input), output_dir=move(self.output_dir),
                       quant=quant, evaluation=ev, base_dir=folder)

    def to_dict(self) -> dict:
        """The Pulsar2 JSON form: enums as strings, ``None`` omitted, extra keys put back.

        Example:
            >>> cfg = load_config({"input_shapes": "x:1x3x8x8", "npu_mode": "NPU2"})
            >>> d = cfg.to_dict()
            >>> d["input_shapes"], d["npu_mode"], d["quant"]["calibration_method"]
            ('x:1x3x8x8', 'NPU2', 'MinMax')
        """
        out: dict[str, Any] = {"input": self.input, "output_dir": self.output_dir,
                               "output_name": self.output_name,
                               "input_shapes": format_input_shapes(self.input_shapes) or None,
                               "quant": _plain(self.quant),
                               "input_processors": _plain(self.input_processors),
                               "output_processors": _plain(self.output_processors),
                               "evaluation": _plain(self.evaluation)}
        out = {k: v for k, v in out.items() if v is not None}
        for path, value in self.extra.items():
            _set_path(out, path, copy.deepcopy(value), create=True)
        return out


def _lookup(items: tuple, name: str) -> Any:
    by_name = {item.tensor_name: item for item in items}
    return by_name.get(name, by_name.get(DEFAULT))


def _plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in fields(obj)
                if getattr(obj, f.name) is not None
                and not (f.name in _SELECTORS and not getattr(obj, f.name))}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, tuple):
        return [_plain(x) for x in obj]
    return obj


# ---------------------------------------------------------------- input shapes

_DIMS = re.compile(r"\d+(?:x\d+)*", re.ASCII)


def parse_input_shapes(text: str, where: str = "input_shapes") -> dict[str, tuple[int, ...]]:
    """Parse Pulsar2's ``name:1x3x224x224;other:1x64`` into ``{name: shape}``.

    Example:
        >>> parse_input_shapes("x:1x3x224x224;y:1x64")
        {'x': (1, 3, 224, 224), 'y': (1, 64)}
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for entry in filter(None, (e.strip() for e in text.split(";"))):
        # NOTE: rpartition, because ONNX tensor names may hold ':' (e.g. "input:0").
        name, sep, dims = entry.rpartition(":")
        name, dims = name.strip(), dims.replace(" ", "").lower()
        if not sep or not name or not _DIMS.fullmatch(dims):
            raise ConfigError(f"{where}: bad entry {entry!r}; expected name:1x3x224x224, "
                              "entries separated by ';'")
        shape = tuple(int(d) for d in dims.split("x"))
        if 0 in shape:
            raise ConfigError(f"{where}: {entry!r} has a 0 dimension; dimensions must be >= 1")
        if name in shapes:
            raise ConfigError(f"{where}: {name!r} is given twice")
        shapes[name] = shape
    return shapes


def format_input_shapes(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The inverse of :func:`parse_input_shapes`.

    Example:
        >>> format_input_shapes({"x": (1, 3, 8, 8), "y": (1, 64)})
        'x:1x3x8x8;y:1x64'
    """
    return ";".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


# ---------------------------------------------------------------- value checks

Kind = Callable[[Any, str], Any]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_error(where: str, what: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {what}, got {_short(value)} ({type(value).__name__})")


def _bad_value(where: str, value: Any, choices: list[str]) -> ConfigError:
    hint = nearest(str(value), choices)
    tail = f" (did you mean {' or '.join(map(repr, hint))}?)" if hint else ""
    return ConfigError(f"{where}: invalid value {_short(value)}; valid: {', '.join(choices)}{tail}")


def _typed(ok: Callable[[Any], bool], what: str, convert: Callable = lambda v: v) -> Kind:
    def parse(v: Any, where: str) -> Any:
        if not ok(v):
            raise _type_error(where, what, v)
        return convert(v)
    return parse


def _ranged(kind: Kind, ok: Callable[[Any], bool], valid: str) -> Kind:
    def parse(v: Any, where: str) -> Any:
        x = kind(v, where)
        if not ok(x):
            raise ConfigError(f"{where}: invalid value {x!r}; valid: {valid}")
        return x
    return parse


def _opt_str(v: Any, where: str) -> str | None:
    # NOTE: Pulsar2 writes "" for an unset string option.
    return None if v is None or v == "" else _str(v, where)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_str = _typed(lambda v: isinstance(v, str), "a string")
_bool = _typed(lambda v: isinstance(v, bool), "true or false")
_int = _typed(_is_int, "an integer")
_float = _typed(lambda v: _is_int(v) or isinstance(v, float), "a number", float)
_unit = _ranged(_float, lambda x: 0.0 <= x <= 1.0, "0 to 1")
_calib_size = _ranged(_int, lambda n: n == -1 or n > 0, "-1 (all samples) or a positive integer")


def _seq(item: Kind, what: str, empty: tuple | None = ()) -> Kind:
    def parse(v: Any, where: str) -> tuple | None:
        if v is None:
            return empty
        if not isinstance(v, list):
            raise _type_error(where, f"a list of {what}", v)
        return tuple(item(x, f"{where}[{i}]") for i, x in enumerate(v)) or empty
    return parse


_strs = _seq(_str, "strings")
_floats = _seq(_float, "numbers", None)  # NOTE: Pulsar2's [] means "not set"
_ints = _seq(_int, "integers", None)


def _enum(enum: type[Enum], *allowed: Enum) -> Kind:
    choices = [m.value for m in (allowed or enum)]

    def parse(v: Any, where: str) -> Enum:
        try:
            member = parse_enum(enum, v, where)
        except ConfigError:
            member = None
        if member is None or member.value not in choices:
            raise _bad_value(where, v, choices)
        return member
    return parse


def _choice(*choices: str) -> Kind:
    def parse(v: Any, where: str) -> str:
        if v not in choices:
            raise _bad_value(where, v, list(choices))
        return v
    return parse


def _shapes(v: Any, where: str) -> dict[str, tuple[int, ...]]:
    if v is None:
        return {}
    if not isinstance(v, str):
        raise _type_error(where, "a string like 'x:1x3x224x224;y:1x64'", v)
    return parse_input_shapes(v, where)


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _check_norm(kw: dict, mean_key: str, std_key: str, where: str) -> None:
    mean, std = kw.get(mean_key), kw.get(std_key)
    if std is not None and 0.0 in std:
        raise ConfigError(f"{_join(where, std_key)}: {list(std)} contains 0; std must be non-zero")
    if mean is not None and std is not None and len(mean) != len(std):
        raise ConfigError(f"{where}: {mean_key} has {len(mean)} values but {std_key} has "
                          f"{len(std)}; give the same number (one per channel)")


def _check_unique(items: tuple, where: str) -> None:
    first = {item.tensor_name: i for i, item in reversed(list(enumerate(items)))}
    for i, item in enumerate(items):
        if first[item.tensor_name] != i:
            raise ConfigError(f"{where}[{i}].tensor_name: {item.tensor_name!r} is already used by "
                              f"{where}[{first[item.tensor_name]}]")


def _merge(one: str | None, many: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(((one,) if one else ()) + many))


_INPUT_CONFIG: dict[str, Kind] = {
    "tensor_name": _str, "calibration_dataset": _opt_str,
    "calibration_format": _enum(DataFormat), "calibration_size": _calib_size,
    "calibration_mean": _floats, "calibration_std": _floats}
_LAYER: dict[str, Kind] = {
    "layer_name": _opt_str, "layer_names": _strs, "op_type": _opt_str, "op_types": _strs,
    "start_tensor_names": _strs, "end_tensor_names": _strs,
    "data_type": _enum(QType, *(q for q in QType if q is not QType.S4)),
    "weight_data_type": _enum(QType, QType.S8, QType.S4, QType.FP32)}
_QUANT: dict[str, Kind] = {
    "calibration_method": _enum(CalibMethod), "precision_analysis": _bool,
    "precision_analysis_method": _enum(Method), "precision_analysis_mode": _enum(Mode),
    "input_sample_dir": _opt_str, "enable_smooth_quant": _bool,
    "smooth_quant_threshold": _unit, "smooth_quant_strength": _unit,
    "conv_bias_data_type": _choice("S32", "FP32"), "fusion": _enum(Fusion),
    "enable_adaround": _bool, "enable_easy_quant": _bool, "enable_brecq": _bool,
    "enable_lsq": _bool, "weight_rounding": _enum(Rounding), "enable_bias_correction": _bool,
    "enable_equalization": _bool}
_IN_PROC: dict[str, Kind] = {
    "tensor_name": _str, "tensor_format": _enum(TensorFormat), "tensor_layout": _enum(Layout),
    "src_format": _enum(TensorFormat), "src_layout": _enum(Layout), "src_dtype": _enum(SrcDType),
    "mean": _floats, "std": _floats}
def _metric_name(v: Any, where: str) -> str:
    name = _str(v, where)
    if name not in TASK_METRICS and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", name):
        raise ConfigError(f"{where}: unknown metric {name!r}{did_you_mean(name, TASK_METRICS)} (or "
                          "'package.module:function' for your own)")
    return name


_EVALUATION: dict[str, Kind] = {
    "metric": _metric_name, "labels": _opt_str, "dataset": _opt_str, "output": _opt_str,
    "k": _ranged(_int, lambda n: n >= 1, "an integer >= 1"), "threshold": _float,
    "max_drop": _ranged(_float, lambda x: x >= 0, "a number >= 0 (in the metric's units)")}
_TOP: dict[str, Kind] = {
    "input": _opt_str, "output_dir": _opt_str, "output_name": _opt_str, "input_shapes": _shapes}


class _Loader:
    """One validation pass; collects the accepted-but-unsimulated keys into ``extra``."""

    def __init__(self) -> None:
        self.extra: dict[str, Any] = {}

    def read(self, data: Any, where: str, kinds: dict[str, Kind], ignored: tuple = ()) -> dict:
        if not isinstance(data, Mapping):
            raise _type_error(where or "config", "an object", data)
        out = {}
        for key, value in data.items():
            path = _join(where, key)
            if key in kinds:
                out[key] = kinds[key](value, path)
            elif key in ignored:
                self.extra[path] = copy.deepcopy(value)
            else:
                hint = did_you_mean(str(key), [*kinds, *ignored])
                raise ConfigError(f"{path}: unknown key{hint}")
        return out

    def objects(self, build: Callable[[Any, str], Any], unique: bool = True) -> Kind:
        def parse(v: Any, where: str) -> tuple:
            if v is None:
                return ()
            if not isinstance(v, list):
                raise _type_error(where, "a list of objects", v)
            items = tuple(build(x, f"{where}[{i}]") for i, x in enumerate(v))
            if unique:
                _check_unique(items, where)
            return items
        return parse

    def input_config(self, v: Any, where: str) -> InputConfig:
        kw = self.read(v, where, _INPUT_CONFIG)
        _check_norm(kw, "calibration_mean", "calibration_std", where)
        return InputConfig(**kw)

    def layer_config(self, v: Any, where: str) -> LayerConfig:
        kw = self.read(v, where, _LAYER, _LAYER_IGNORED)
        names = _merge(kw.pop("layer_name", None), kw.pop("layer_names", ()))
        types = _merge(kw.pop("op_type", None), kw.pop("op_types", ()))
        starts, ends = kw.get("start_tensor_names", ()), kw.get("end_tensor_names", ())
        if bool(starts) != bool(ends):
            raise ConfigError(f"{where}: start_tensor_names and end_tensor_names go together; "
                              'set both (["DEFAULT"] in both = the whole model) or neither')
        if names and types:
            raise ConfigError(f"{where}: layer names and op types cannot share one entry "
                              "(Pulsar2 rule); split it into two entries")
        if not (names or types or starts):
            raise ConfigError(f"{where}: no selector; set layer_name(s), op_type(s), or "
                              "start_tensor_names + end_tensor_names")
        return LayerConfig(layer_names=names, op_types=types, **kw)

    def quant(self, v: Any, where: str) -> QuantConfig:
        kinds = {**_QUANT, "input_configs": self.objects(self.input_config),
                 "layer_configs": self.objects(self.layer_config, unique=False)}
        return QuantConfig(**self.read(v, where, kinds, _QUANT_IGNORED))

    def input_processor(self, v: Any, where: str) -> InputProcessor:
        kw = self.read(v, where, _IN_PROC, _IN_PROC_IGNORED)
        _check_norm(kw, "mean", "std", where)
        return InputProcessor(**kw)

    def output_processor(self, v: Any, where: str) -> OutputProcessor:
        kw = self.read(v, where, {"tensor_name": _str, "dst_perm": _ints}, _OUT_PROC_IGNORED)
        perm = kw.get("dst_perm")
        if perm is not None and sorted(perm) != list(range(len(perm))):
            raise ConfigError(f"{where}.dst_perm: {list(perm)} is not a permutation of "
                              f"0..{len(perm) - 1}")
        return OutputProcessor(**kw)

    def evaluation(self, v: Any, where: str) -> EvaluationConfig | None:
        return None if v is None else EvaluationConfig(**self.read(v, where, _EVALUATION))

    def config(self, data: Any, base_dir: Path | None) -> Config:
        kinds = {**_TOP, "quant": self.quant,
                 "input_processors": self.objects(self.input_processor),
                 "output_processors": self.objects(self.output_processor),
                 "evaluation": self.evaluation}
        kw = self.read(data, "", kinds, _TOP_IGNORED)
        return Config(**kw, extra=self.extra, base_dir=base_dir)


# ---------------------------------------------------------------- dotted paths

_SEGMENT = re.compile(r"([^.\[\]]+)((?:\[\d+\])*)")


def _split_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for seg in path.split("."):
        m = _SEGMENT.fullmatch(seg)
        if m is None:
            raise ConfigError(f"{path}: not a dotted key like 'quant.calibration_method'")
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\d+", m.group(2)))
    return parts


def _set_path(data: dict, path: str, value: Any, create: bool = False) -> None:
    parts, node, where = _split_path(path), data, ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = f"{len(node)} entries" if isinstance(node, list) else "not a list"
                raise ConfigError(f"{where}[{part}]: index out of range ({size})")
            where = f"{where}[{part}]"
        else:
            if not isinstance(node, dict):
                hint = f"; use an index like {where}[0]" if isinstance(node, list) else ""
                raise ConfigError(f"{where}: is a {type(node).__name__}, cannot set {path!r}{hint}")
            if not last and part not in node and create:
                node[part] = {}
            where = _join(where, part)
        if last:
            node[part] = value
        else:
            node = node[part]


def _parse_value(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    # NOTE: not "none": it is a value of quant.fusion (`--quant.fusion none`).
    words = {"true": True, "false": False, "null": None}
    return words.get(value.strip().lower(), value)


# ---------------------------------------------------------------- files

# NOTE: one pass over strings and comments, so '//' or '#' inside a string stays untouched.
_TOKENS = re.compile(r'"(?:\\.|[^"\\\n])*"|//[^\n]*|#[^\n]*|/\*.*?\*/', re.S)


def _strip_comments(text: str) -> str:
    def blank(m: re.Match) -> str:
        s = m.group()
        # NOTE: keep newlines so that JSON error line/column still match the file.
        return s if s.startswith('"') else re.sub(r"[^\n]", " ", s)
    return _TOKENS.sub(blank, text)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ConfigError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path}: {'not a file' if path.exists() else 'config file not found'}")
    if path.suffix.lower() in (".yaml", ".yml", ".toml", ".prototxt"):
        raise ConfigError(f"{path}: only JSON configs are supported; convert it to JSON")
    try:
        text = path.read_text(encoding="utf-8-sig")
        return json.loads(_strip_comments(text), object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: "
                          f"{e.msg}") from None
    except (ConfigError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def load_config(source: str | Path | Mapping) -> Config:
    """Load and validate a config from a JSON file (comments allowed) or a parsed dict.

    Relative paths in a file resolve against the file's folder (:meth:`Config.resolve_path`);
    a dict's resolve against the working directory.

    Example:
        >>> cfg = load_config({"input_shapes": "x:1x3x224x224",
        ...                    "quant": {"calibration_method": "Percentile"}})
        >>> cfg.input_shapes["x"], cfg.quant.calibration_method
        ((1, 3, 224, 224), <CalibMethod.Percentile: 'Percentile'>)
    """
    if isinstance(source, Mapping):
        return _Loader().config(source, None)
    path = Path(source).expanduser()
    return _Loader().config(_read_json(path), path.resolve().parent)


def _compact_lists(text: str) -> str:
    # NOTE: one line per list of scalars (mean, std, names); json.dumps never puts a raw
    # newline inside a string, so ",\n" only ever separates elements.
    return re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s*\]",
                  lambda m: "[" + re.sub(r",\n\s+", ", ", m.group(1)) + "]", text)


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write ``cfg`` as Pulsar2 JSON, atomically (temp file in the same folder, then rename).

    Values are written as they are, so load -> save -> load gives an equal config; relative
    paths then resolve against the new file's folder (see :meth:`Config.rebased`). Parent
    folders are created.

    Example:
        >>> import tempfile
        >>> out = save_config(load_config({"input_shapes": "x:1x3"}),
        ...                   Path(tempfile.mkdtemp()) / "sub" / "config.json")
        >>> load_config(out).input_shapes["x"]
        (1, 3)
    """
    path = Path(path).expanduser()
    text = _compact_lists(json.dumps(cfg.to_dict(), indent=2, ensure_ascii=False)) + "\n"
    write_text(path, text)
    return path
