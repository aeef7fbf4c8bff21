"""``spectramind app``: serve the diagnostics app with one fresh app per browser session."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

__all__ = ["serve", "APP_PATH"]

APP_PATH = "app"   #: URL path of the app (``http://<address>:<port>/app``)


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _has_display() -> bool:
    """A browser window can open here (a desktop session, not a headless server or container)."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def serve(port: int = 5006, address: str = "127.0.0.1", data_root: str | Path | None = None,
          show: bool = True) -> int:
    """Serve the app until interrupted; prints the URL it serves.

    Parameters
    ----------
    port : int
        TCP port (0 picks a free one).
    address : str
        Interface to bind; the loopback interface by default, so the app is not reachable from other machines.
    data_root : str or pathlib.Path, optional
        Kaggle-layout dataset root whose planets may be opened; nothing outside it is read
        (the demo planet is always offered).
    show : bool
        Open the app in a browser tab (only where a display exists: on a headless machine the
        printed URL is the way in).

    Returns
    -------
    int
        Exit code (0 after a normal stop).

    Raises
    ------
    FileNotFoundError
        ``data_root`` is not a directory.
    """
    import panel as pn

    from .main import TITLE, create_app
    from .state import demo_root, start_prewarm

    root = None
    if data_root is not None:
        root = Path(data_root).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"--data-root {root}: not a directory")
    if port == 0:
        port = _free_port(address)
    demo_root()
    start_prewarm(root)
    origins = sorted({f"{host}:{port}" for host in (address, "localhost", "127.0.0.1")})
    def session_app():
        # a plain function: Panel calls it once per session (a functools.partial would be rendered as text)
        return create_app(data_root=root)

    server = pn.serve({APP_PATH: session_app}, port=port, address=address,
                      websocket_origin=origins, show=False, start=False, title=TITLE, liveness=True,
                      verbose=False)
    print(f"SpectraMind diagnostics app: http://{address}:{server.port}/{APP_PATH}", flush=True)
    if show and _has_display():
        server.io_loop.add_callback(server.show, f"/{APP_PATH}")
    server.start()
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0

