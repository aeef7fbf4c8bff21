"""The app as users start it, without a browser: ten fresh starts of ``spectramind app`` (no start-up race),
and the README's ``panel serve`` line (loopback only).

Each server is a real process; a session is opened the way a browser opens one (an HTTP GET, then the
Bokeh websocket) with :func:`bokeh.client.pull_session`, which returns the session's document, so the
stage tabs it holds can be read.  The browser tests (``tests/test_app_browser.py``) drive the same
commands in Chromium.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import panel  # noqa: F401  -- registers Panel's Bokeh models, so the client can read the session documents
import pytest
from bokeh.client import pull_session

from calib_core.config import compose_config
from spectramind_app.views import tab_label

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOMINAL = compose_config("calib/nominal")
#: one tab per stage, the summary, then the investigation tabs (Light curves, Compare, Planets)
STAGE_TABS = [tab_label(str(s)) for s in NOMINAL.calib if s not in ("profile", "method")] + ["Summary",
                                                                                             "Light curves",
                                                                                             "Compare", "Planets"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_app_commands() -> list[str]:
    """Every command in the README's code blocks that starts the app (``make app``, ``spectramind app``,
    ``panel serve``), comments and continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if re.match(r"^(make app\b|spectramind app\b|panel serve\b)", line):
                commands.append(line)
    return list(dict.fromkeys(commands))


def concrete(command: str, port: int, data_root: Path) -> list[str]:
    """The README command as argv, with a free port, the given data root and this venv's executables."""
    command = re.sub(r"\b5006\b", str(port), command).replace("DIR", str(data_root))
    argv = shlex.split(command.replace("[", "").replace("]", ""))     # optional arguments: all given
    if argv[0] == "make":                                               # literally `make app PORT=<port>`
        return [*[a for a in argv if not a.startswith("PORT=")], f"PORT={port}"]
    return [str(BIN / argv[0]), *argv[1:]]


def app_url(command: str, port: int) -> str:
    return f"http://127.0.0.1:{port}/" + ("main" if command.startswith("panel serve") else "app")


class Server:
    """One app server process; ``stop()`` ends it with SIGINT (its exit handlers run) and returns its log."""

    def __init__(self, argv: list[str], url: str, log: Path, env: dict | None = None):
        self.url, self.log = url, log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, **(env or {})}, start_new_session=True)

    def wait_up(self, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"the app exited early:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(self.url.rsplit("/", 1)[0] + "/liveness", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError as exc:
                if getattr(exc, "code", None) == 404:          # panel serve without --liveness: the app itself
                    try:
                        with urllib.request.urlopen(self.url, timeout=30) as resp:
                            if resp.status == 200:
                                return
                    except OSError:
                        pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not come up:\n{self.log.read_text()}")
            time.sleep(0.2)

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.log.read_text(errors="replace")


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                if len(addr) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, 32, 8))
                    found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found


def session_tabs(url: str) -> list[str]:
    """Open one session of the app at ``url`` and return the titles of its stage tabs."""
    with pull_session(url=url) as session:
        tabs = [m for m in session.document.models if type(m).__name__ == "Tabs"]
        assert len(tabs) == 1, [type(m).__name__ for m in session.document.models][:20]
        return [str(panel_.title) for panel_ in tabs[0].tabs]


def test_readme_documents_every_way_to_start_the_app():
    commands = readme_app_commands()
    assert any(c.startswith("make app") for c in commands), commands
    assert any(c.startswith("spectramind app") for c in commands), commands
    serve = [c for c in commands if c.startswith("panel serve")]
    assert serve and all("--address 127.0.0.1" in c for c in serve), serve


def test_ten_fresh_starts_show_no_start_up_race(demo_root, tmp_path):
    """Two sessions opened the moment the server answers, while the warm-up run starts: both get the stage
    tabs, the warm-up run starts (and completes, on the first and last start), and nothing in the log says two
    compositions collided or anything failed, stopping the server mid-run included."""
    for i in range(10):
        port = free_port()
        tmp = tmp_path / f"tmp{i}"            # the server's temp dir: its warm-up run lands here
        tmp.mkdir()
        server = Server([str(BIN / "spectramind"), "app", "--port", str(port), "--data-root", str(demo_root),
                         "--no-show"], f"http://127.0.0.1:{port}/app", tmp_path / f"app{i}.log", {"TMPDIR": str(tmp)})
        try:
            server.wait_up()
            results: list = [None, None]

            def visit(k: int) -> None:
                try:
                    results[k] = session_tabs(server.url)
                except Exception as exc:  # noqa: BLE001 -- reported below
                    results[k] = exc

            threads = [threading.Thread(target=visit, args=(k,)) for k in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results == [STAGE_TABS, STAGE_TABS], (results, server.log.read_text())
            # the warm-up run (what the first visitor's first run is seeded from) got past its composition (the
            # race) and runs; on the first and last start it also completes (the others stop the server then)
            done = "run_hash_summary.json" if i in (0, 9) else "run_state.json"
            deadline = time.monotonic() + 600
            while not list(tmp.glob(f"spectramind-app-shared-*/*/{done}")):
                assert server.proc.poll() is None and time.monotonic() < deadline, server.log.read_text()
                time.sleep(0.2)
        finally:
            log = server.stop()
        assert "GlobalHydra is already initialized" not in log, log
        assert "Traceback" not in log and "ERROR" not in log, log


def test_readme_panel_serve_line_binds_loopback_only_and_serves_the_stage_tabs(demo_root, tmp_path):
    (command,) = [c for c in readme_app_commands() if c.startswith("panel serve")]
    port = free_port()
    argv = concrete(command, port, demo_root)
    server = Server(argv, app_url(command, port), tmp_path / "panel.log")
    try:
        server.wait_up()
        assert listening_addresses(port) == {"127.0.0.1"}
        assert session_tabs(server.url) == STAGE_TABS
    finally:
        server.stop()
