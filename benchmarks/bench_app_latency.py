"""Latency of the diagnostics app as measured in a real browser (Debian Chromium via Playwright).

Serves ``app/main.py`` with ``panel serve`` on the built-in demo planet and prints

* first visit after the server started, and a new session on the running server: navigation until
  the stage tabs are visible, and until the session's first run finished and its QC badges show;
* tab switch: clicking a stage tab until its plots are visible;
* late-stage edit: typing a new ``phase.binning.nbins`` and pressing Run until the binned
  light curve in the browser has the new number of points (median of ``--repeats``).

Usage::

    python benchmarks/bench_app_latency.py [--repeats 5] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
_POINTS_JS = """([start, n]) => { for (const m of Bokeh.documents[0].all_models)
    if (m.title && m.title.text !== undefined && String(m.title.text).startsWith(start) && m.renderers &&
        m.renderers.some(r => r.data_source && r.data_source.get_length() === n)) return true;
    return false; }"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(port: int, data_root: str | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "panel", "serve", str(ROOT / "app" / "main.py"), "--port", str(port),
           "--address", "127.0.0.1", "--liveness", "--warm"]
    if data_root:
        cmd += ["--args", "--data-root", data_root]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("panel serve exited early")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("panel serve did not come up within 120 s")


def _first_visit(browser, port: int) -> tuple[float, float, object]:
    """Open a new session; seconds until the tabs show and until the first run's badges show."""
    page = browser.new_context(viewport={"width": 1500, "height": 1050}).new_page()
    page.set_default_timeout(120_000)
    t0 = time.perf_counter()
    page.goto(f"http://127.0.0.1:{port}/main")
    expect(page.locator(".bk-tab").first).to_be_visible()
    shell = time.perf_counter() - t0
    expect(page.locator(".run-status")).to_contain_text("run #1 done", timeout=120_000)
    expect(page.locator(".qc-badge").first).to_be_visible()
    return shell, time.perf_counter() - t0, page


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the latencies; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="late-stage edits to time (median printed)")
    parser.add_argument("--data-root", default=None, help="dataset root (default: the built-in demo planet)")
    args = parser.parse_args(argv)
    from spectramind_app.state import demo_root

    if args.data_root is None:
        demo_root()            # generate the demo planet before timing anything
    port = _free_port()
    proc = _start_server(port, args.data_root)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            cold_shell, cold_first, page = _first_visit(browser, port)
            page.context.close()
            shell, first, page = _first_visit(browser, port)
            t1 = time.perf_counter()
            page.locator(".bk-tab", has_text="Phase").click()
            expect(page.locator(".diag-plot").first).to_be_visible()
            tab = time.perf_counter() - t1
            edits = []
            for i in range(args.repeats):
                nbins = 40 + 7 * i
                t2 = time.perf_counter()
                box = page.locator(".cfg-phase-binning-nbins input")
                box.fill(str(nbins))
                box.press("Enter")
                expect(page.locator(".stage-phase")).to_contain_text("stale")
                page.locator(".run-chain button").click()
                page.wait_for_function(_POINTS_JS, arg=["Binned white light", nbins], timeout=120_000)
                edits.append(time.perf_counter() - t2)
                expect(page.locator(".run-status")).to_contain_text(f"run #{i + 2} done")
            browser.close()
    finally:
        proc.send_signal(signal.SIGINT)           # a clean shutdown runs the app's exit handlers
        proc.wait(10)
    data = args.data_root or "built-in demo planet"
    print(f"app latency in Chromium ({data}, nominal profile)")
    print(f"  first visit after server start: tabs {cold_shell:5.2f} s, diagnostics {cold_first:5.2f} s "
          "(the demo run is computed once per process)")
    print(f"  new session on a running server: tabs {shell:5.2f} s, diagnostics {first:5.2f} s")
    print(f"  tab switch to Phase (plots visible)  {tab:5.2f} s")
    print(f"  phase.binning.nbins edit -> Run -> binned curve updated: median {statistics.median(edits):.2f} s "
          f"(min {min(edits):.2f}, max {max(edits):.2f}, n={len(edits)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
