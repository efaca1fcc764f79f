"""Atomic outputs: every file or folder axnb writes appears whole or not at all.

The user never sees a half-written output: writes go to a temporary name beside the target and
are renamed onto it only when complete; on any error the temporary is removed and the target is
left as it was. Outputs get the usual umask permissions (``mkstemp`` would make them 0600).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> p = write_bytes(Path(tempfile.mkdtemp()) / "sub" / "a.txt", b"done")
    >>> p.read_text()
    'done'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "public_permissions", "replace_dir", "write_bytes",
           "write_text"]


def public_permissions(path: str | Path, folder: bool = False) -> None:
    """Give ``path`` the permissions a plain ``open()`` (or ``mkdir``) would, under the umask."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if folder else 0o666) & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """A temporary file name beside ``path``, renamed onto it only if the block succeeds.

    Parent folders are created.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> out = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_path(out) as t:
        ...     _ = Path(t).write_text("done")
        >>> out.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        public_permissions(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes(path: str | Path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_dir(dst: str | Path, replace: bool = False):
    """A temporary folder beside ``dst``, renamed onto it only if the block succeeds.

    Args:
        dst: the folder to create.
        replace: replace an existing ``dst`` (the old one is removed only after the rename);
            otherwise an existing non-empty ``dst`` is an error.
    """
    dst = Path(dst)
    if dst.exists() and not replace and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} exists and is not an empty folder")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        public_permissions(tmp, folder=True)
        replace_dir(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: Path, out: Path) -> None:
    """Rename folder ``tmp`` onto ``out``; an existing ``out`` is removed after the rename."""
    old = None
    if out.exists():
        if out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        else:
            old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
            out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
