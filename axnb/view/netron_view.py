"""Netron graph viewer served on localhost, for an IFrame in a notebook or a browser tab.

Example:
    >>> from axnb.view.netron_view import serve                      # doctest: +SKIP
    >>> with serve("model.onnx") as srv:                             # doctest: +SKIP
    ...     display(srv)           # the IFrame; srv.url for a browser tab
"""

from __future__ import annotations

import html
import logging
import socket
import tempfile
import time
from pathlib import Path

from axnb.errors import AxnbError


def free_port(host: str = "localhost") -> int:
    """A TCP port nothing listens on right now (the OS picks it).

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _model_file(model) -> Path:
    if hasattr(model, "proto") and hasattr(model, "save"):
        # NOTE: a loaded Model shows its optimized graph, the one every analysis runs.
        if getattr(model, "path", None) and Path(model.path).exists():
            return Path(model.path)
        return model.save(Path(tempfile.mkdtemp(prefix="axnb-netron-")) / "optimized.onnx")
    path = Path(model)
    if not path.is_file():
        raise AxnbError(f"netron: no model file at {str(path)!r}")
    return path


class NetronServer:
    """A running netron server for one model file; stop it with :meth:`stop` or ``with``.

    Attributes:
        path: the model file served.
        address: (host, port).
        url: ``http://host:port``.
    """

    def __init__(self, path: Path, address: tuple[str, int]) -> None:
        self.path, self.address = path, address
        self.url = f"http://{address[0]}:{address[1]}"

    @property
    def running(self) -> bool:
        import netron

        return bool(netron.status(self.address))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and free the port (waits up to ``timeout`` s for the thread).

        Example:
            >>> srv.stop()                                          # doctest: +SKIP
        """
        import netron

        netron.stop(self.address)
        end = time.monotonic() + timeout
        while netron.status(self.address) and time.monotonic() < end:
            time.sleep(0.02)

    def iframe_html(self, width: str | int = "100%", height: str | int = 600) -> str:
        """An ``<iframe>`` showing the graph.

        Example:
            >>> srv.iframe_html(height=400)                         # doctest: +SKIP
            '<iframe src="http://localhost:...'
        """
        a = {k: html.escape(str(v), quote=True)
             for k, v in (("src", self.url), ("width", width), ("height", height))}
        return (f'<iframe src="{a["src"]}" width="{a["width"]}" height="{a["height"]}" '
                f'style="border: 1px solid #ddd"></iframe>')

    def IFrame(self, width: str | int = "100%", height: int = 600):  # noqa: N802
        """An ``IPython.display.IFrame`` of the graph (needs IPython)."""
        from IPython.display import IFrame

        return IFrame(self.url, width=width, height=height)

    def _repr_html_(self) -> str:
        return self.iframe_html()

    def __enter__(self) -> NetronServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"NetronServer({self.path.name!r} at {self.url}, {state})"


def serve(model, port: int | None = None, host: str = "localhost") -> NetronServer:
    """Serve a model file (or a loaded Model's optimized graph) with netron, without a browser.

    Args:
        model: path of an ONNX file, or an :class:`axnb.graph.Model`.
        port: TCP port (default: a free one).
        host: interface to listen on (localhost only by default).

    Returns:
        NetronServer (``.url``, ``.stop()``, context manager, ``.iframe_html()``).

    Raises:
        AxnbError: the file does not exist or the server cannot listen (port taken, bad host).

    Example:
        >>> srv = serve("model.onnx"); print(srv.url); srv.stop()  # doctest: +SKIP
    """
    import netron

    path = _model_file(model)
    try:
        port = free_port(host) if port is None else int(port)
    except OSError as e:
        raise AxnbError(f"netron: cannot find a free port on {host!r}: {e}") from None
    if netron.status((host, port)):
        # NOTE: netron.serve would first stop the server already there; refuse instead.
        raise AxnbError(f"netron already serves a model at {host}:{port}; stop it first or "
                        "leave port=None for a free one")
    root = logging.getLogger()
    guard = logging.NullHandler()
    # NOTE: netron.serve calls logging.basicConfig() when the root logger has no handler,
    # which would change the user's logging; a NullHandler for the call prevents that.
    root.addHandler(guard)
    try:
        address = netron.serve(str(path), browse=False, address=(host, port))
    except (OSError, ValueError) as e:
        raise AxnbError(f"netron could not serve {path.name} at {host}:{port}: {e} "
                        "(try another port, or host='127.0.0.1')") from None
    finally:
        root.removeHandler(guard)
    return NetronServer(path, tuple(address))
