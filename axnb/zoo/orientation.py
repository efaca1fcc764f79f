"""Labelled text-orientation samples for the zoo's PP-LCNet classifier, made from real files.

Text: sentences of Python's ``pydoc_data`` help texts rendered as paragraphs, short blocks of
lines and single lines with Pillow's bundled font (Aileron) and the DejaVu/STIX fonts of the
matplotlib wheel (read as files), in dark-on-light, light-on-dark and on faded photo
backgrounds; plus the two text images of the scikit-image wheel (``page.png``, a scanned book
page, and ``text.png``, handwritten formulas photographed at a slant) and square crops of them.
Each image is rotated clockwise by 0/90/180/270 degrees; the label is the index of that angle,
as the model's own metadata lists its classes (``character``: ``0 90 180 270``).

NOTE: "clockwise" is measured, not assumed: rendered upright text rotated by Pillow's
``rotate(-90)`` (clockwise) is what the model calls ``90`` on every rendered sample. The first
sample set labelled counter-clockwise rotations, which alone put the float model near chance.

Natural photos (no text) are kept apart in ``photos/`` as a distribution-shift example: the
orientation of a photo without text is not what this model was trained for.

Example:
    >>> ANGLES
    (0, 90, 180, 270)
    >>> [f for f, _ in FONTS][:2]
    ['Aileron (Pillow)', 'DejaVuSans.ttf']
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import numpy as np

ANGLES = (0, 90, 180, 270)          # clockwise; the class index is the position here
CANVAS = 256                        # square: axnb resizes straight to 224x224 (no crop)
# NOTE: (font, kind); "" = Pillow's bundled FreeType font (ImageFont.load_default(size)).
FONTS = (("Aileron (Pillow)", ""), ("DejaVuSans.ttf", "mpl"), ("DejaVuSerif.ttf", "mpl"),
         ("DejaVuSansMono.ttf", "mpl"), ("DejaVuSans-Bold.ttf", "mpl"),
         ("DejaVuSerif-Italic.ttf", "mpl"), ("STIXGeneral.ttf", "mpl"),
         ("DejaVuSans-Oblique.ttf", "mpl"))
LAYOUTS = ("para", "lines", "line")
# (ink, paper): paper an RGB colour, or ("photo", tint, alpha) = a real photo blended towards
# the tint (scene-like text). NOTE: half the styles are light-on-dark (screens, signs, slides)
# and the contrast is that of print and screens, not pure black on white: with white pages
# only, the calibration images sat ~1 std above the config's mean, their spread ~1.4 std.
STYLES = (((70, 70, 70), (222, 220, 214)), ((190, 190, 195), (50, 60, 90)),
          ((40, 40, 40), ("photo", (235, 235, 235), 0.5)), ((200, 200, 200), (60, 60, 60)),
          ((40, 40, 90), (185, 185, 185)), ((225, 225, 225), ("photo", (0, 0, 0), 0.6)),
          ((80, 60, 40), (228, 218, 194)), ((230, 210, 130), (45, 85, 55)))
BACKGROUNDS = ("brick.png", "grass.png", "gravel.png", "coffee.png")
SCANS = ("page.png", "text.png")
SHIFT_PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
                "motorcycle_left.png", "rocket.jpg", "hubble_deep_field.jpg")
N_RENDERED = 24


def _font(name: str, kind: str, size: int):
    from PIL import ImageFont

    if not kind:
        return ImageFont.load_default(size=size)
    dist = metadata.distribution("matplotlib")
    return ImageFont.truetype(str(dist.locate_file(f"matplotlib/mpl-data/fonts/ttf/{name}")), size)


def _wrap(text: str, font, width: int) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        t = f"{cur} {word}".strip()
        if cur and font.getlength(t) > width:
            lines.append(cur)
            cur = word
        else:
            cur = t
    return lines + [cur]


def _paper(paper, photo, rng):
    from PIL import Image

    if photo is None:
        return Image.new("RGB", (CANVAS, CANVAS), paper)
    _, tint, alpha = paper
    w, h = photo.size
    s = min(w, h, CANVAS * 2)
    x, y = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
    bg = photo.crop((x, y, x + s, y + s)).resize((CANVAS, CANVAS))
    return Image.blend(bg, Image.new("RGB", bg.size, tint), alpha)


def render(text: str, font, layout: str, ink, paper, photo=None, seed: int = 0):
    """One upright text image (CANVAS x CANVAS): a paragraph, 2-3 lines or one line.

    Example:
        >>> im = render("Hello world", _font("", "", 20), "line", (0, 0, 0), (255, 255, 255))
        >>> im.size, im.getpixel((0, 0))
        ((256, 256), (255, 255, 255))
    """
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    img = _paper(paper, photo, rng)
    margin = 12
    lines = _wrap(text, font, CANVAS - 2 * margin)
    asc, desc = font.getmetrics()
    step = int((asc + desc) * 1.3)
    keep = {"para": (CANVAS - 2 * margin) // step, "lines": int(rng.integers(2, 4)), "line": 1}
    lines = lines[:max(1, keep[layout])]
    y = (CANVAS - step * len(lines)) // 2 if layout != "para" else margin
    draw = ImageDraw.Draw(img)
    for line in lines:
        draw.text((margin, y), line, font=font, fill=ink)
        y += step
    return img


def rendered_images(texts: list[str], photo_of) -> list[tuple[str, object]]:
    """The N_RENDERED upright rendered images, (stem, image), cycling fonts/layouts/styles."""
    out = []
    for i in range(N_RENDERED):
        fname, kind = FONTS[i % len(FONTS)]
        # NOTE: styles shift by one per round of fonts, so no font always gets the same style.
        layout, (ink, paper) = LAYOUTS[i % len(LAYOUTS)], STYLES[(i + i // len(FONTS)) % 8]
        size = (14, 18, 22, 28)[(i // 3) % 4]
        text = " ".join(texts[i * 5:(i + 1) * 5])
        photo = photo_of(BACKGROUNDS[i % len(BACKGROUNDS)]) if paper[0] == "photo" else None
        img = render(text, _font(fname, kind, size), layout, ink, paper, photo, seed=i)
        out.append((f"{layout}_{Path(fname.split()[0]).stem.lower()}_{size}", img))
    return out


def scan_images(photo_of) -> list[tuple[str, object]]:
    """The scikit-image text images: whole, plus square crops of their text."""
    out = []
    for f in SCANS:
        img = photo_of(f)
        w, h = img.size
        s = min(w, h)
        out.append((f"scan_{Path(f).stem}", img))
        for j, x in enumerate((0, (w - s) // 2, w - s)):
            out.append((f"scan_{Path(f).stem}_crop{j}", img.crop((x, 0, x + s, s))))
    return out


def write_rotated(images: list[tuple[str, object]], folder: Path) -> dict[str, int]:
    """Save each image rotated clockwise by ANGLES; returns file name -> class index.

    Files are named ``NNN_<stem>_cwDDD.png`` so that the sorted order (the calibration order)
    interleaves sources and holds all four angles of an image together.
    """
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i, (stem, img) in enumerate(images):
        for k, deg in enumerate(ANGLES):
            fn = f"{i:03d}_{stem}_cw{deg:03d}.png"
            img.rotate(-deg, expand=True).save(folder / fn)
            labels[fn] = k
    return labels


def interleave(a: list, b: list) -> list:
    """Spread ``b`` evenly through ``a`` (so the first samples already mix both).

    Example:
        >>> interleave([1, 2, 3, 4], ["x", "y"])
        [1, 'x', 2, 3, 'y', 4]
    """
    out, step = [], max(1, len(a) // max(1, len(b)))
    rest = list(b)
    for i, x in enumerate(a):
        out.append(x)
        if rest and i % step == 0:
            out.append(rest.pop(0))
    return out + rest


def write(d: Path, photo_of, texts: list[str]) -> None:
    """Write ``calib/`` + ``labels.json`` (text) and ``photos/`` + ``photos_labels.json``."""
    images = interleave(rendered_images(texts, photo_of), scan_images(photo_of))
    labels = write_rotated(images, d / "calib")
    (d / "labels.json").write_text(json.dumps(labels, indent=1, sort_keys=True))
    photos = [(Path(f).stem, photo_of(f)) for f in SHIFT_PHOTOS]
    shift = write_rotated(photos, d / "photos")
    (d / "photos_labels.json").write_text(json.dumps(shift, indent=1, sort_keys=True))
