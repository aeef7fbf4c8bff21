"""The served app driven in Debian's Chromium through Playwright.

The app is started as users start it, ``spectramind app`` (what ``make app`` runs), with
``--data-root`` pointing at the small demo planet of ``tests/conftest.py``.
The tests share one page (a session of the app) and run in file order:
first render and every tab (screenshots under ``test-artifacts/screenshots/``),
widget changes in three stages, a re-run from a middle stage, the YAML export,
a refused value; then two more sessions at once check isolation.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Page, expect

from spectramind_app.views import tab_label
from calib_core.config import compose_config, config_hash
from calib_core.stages import stage_info

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
RUN_TIMEOUT = 90_000
# Panel renders a tab's content when it is first opened; on a loaded 2-core CI machine that can take more
# than Playwright's 5 s default.  Latencies are measured and reported separately, never by this timeout.
expect.set_options(timeout=20_000)
NOMINAL = compose_config("calib/nominal")
INVESTIGATION_TABS = ("Light curves", "Compare", "Planets")     #: after the summary (issue 15's contract)
WITH_PLOTS = ("adc", "dark", "flat", "cds", "photometry", "trace", "phase", "depths")


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "accept_downloads": True, "viewport": {"width": 1500, "height": 1050}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served_app(data_root: Path, log: Path):
    """``spectramind app --data-root data_root`` as users start it; yields its URL."""
    port = _free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("spectramind")), "app", "--port", str(port),
                                 "--data-root", str(data_root), "--no-show"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"spectramind app exited early:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/liveness", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"spectramind app did not come up:\n{log.read_text()}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/app"
    finally:
        proc.send_signal(signal.SIGINT)       # a clean shutdown runs the app's exit handlers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def app_url(demo_root, tmp_path_factory):
    """URL of ``spectramind app`` started on the small demo planet's data root."""
    with served_app(demo_root, tmp_path_factory.mktemp("server") / "app.log") as url:
        yield url


def _goto(browser, url: str) -> tuple[Page, float]:
    """A new session (its own browser context); returns the page and the start time."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1500, "height": 1050})
    context.set_default_timeout(30_000)
    page = context.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    return page, t0


def _await_first_run(page: Page, t0: float) -> float:
    """Seconds from ``t0`` until the session's first run finished and its QC badges are shown."""
    expect(page.locator(".bk-tab").first).to_be_visible()
    wait_run(page, 1)
    expect(page.locator(".qc-badge").first).to_be_visible()
    return time.perf_counter() - t0


FIRST_RENDER_S: list[float] = []


@pytest.fixture(scope="module")
def app_page(browser, app_url):
    page, t0 = _goto(browser, app_url)
    FIRST_RENDER_S.append(_await_first_run(page, t0))
    yield page
    page.context.close()


def wait_run(page: Page, number: int) -> None:
    expect(page.locator(".run-status")).to_contain_text(f"run #{number} done", timeout=RUN_TIMEOUT)


def tab(page: Page, stage: str | None):
    """The tab header of ``stage`` (None: the summary tab)."""
    label = "Summary" if stage is None else tab_label(stage)
    return page.locator(".bk-tab").filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))


def open_tab(page: Page, stage: str | None) -> None:
    tab(page, stage).click()
    if stage is not None:
        expect(page.locator(f".stage-{stage}")).to_contain_text(stage_info(stage).title)
        expect(page.locator(".cfg-widget").first).to_be_visible()


def set_input(page: Page, stage: str, key: str, value: object) -> None:
    box = page.locator(f".cfg-{stage}-{key.replace('.', '-').replace('_', '-')} input")
    box.fill(str(value))
    box.press("Enter")


def wait_marker(page: Page, stage: str, marker: str, timeout_s: float = 10.0) -> None:
    """Wait until the tab header of ``stage`` shows ``marker`` (``stale``, ``off`` or none)."""
    header = tab(page, stage)
    deadline = time.monotonic() + timeout_s
    while True:
        content = header.evaluate("el => getComputedStyle(el, '::after').content")
        shown = content.strip('"') if content not in ("none", "normal") else ""
        if shown == marker:
            return
        assert time.monotonic() < deadline, f"tab {stage}: marker {shown!r}, expected {marker!r}"
        page.wait_for_timeout(100)


def click_run(page: Page, number: int) -> None:
    page.locator(".run-chain button").click()
    wait_run(page, number)


def click_next_run(page: Page) -> None:
    """Run the chain once more, whatever the session ran before (tests sharing one session in any order)."""
    found = re.search(r"run #(\d+)", status_text(page))
    click_run(page, (int(found.group(1)) if found else 0) + 1)


def download(page: Page, css: str, folder: Path) -> Path:
    """Click the download widget ``css`` (a FileDownload) and save the file under its suggested name in ``folder``."""
    with page.expect_download() as event:
        page.locator(f"{css} button, {css} a").first.click()
    path = folder / event.value.suggested_filename
    event.value.save_as(path)
    return path


_HAS_POINTS_JS = """([start, n]) => {
    // old figures stay in the document until Bokeh collects them: look at every matching figure
    for (const doc of Bokeh.documents) for (const m of doc.all_models)
        if (m.title && m.title.text !== undefined && String(m.title.text).startsWith(start) && m.renderers &&
            m.renderers.some(r => r.data_source && r.data_source.get_length() === n)) return true;
    return false; }"""


def has_points(page: Page, title_start: str, n: int) -> bool:
    """Whether a Bokeh figure titled ``title_start...`` has a glyph with ``n`` data points."""
    return page.evaluate(_HAS_POINTS_JS, [title_start, n])


def wait_points(page: Page, title_start: str, n: int) -> None:
    page.wait_for_function(_HAS_POINTS_JS, arg=[title_start, n], timeout=RUN_TIMEOUT)


def plot_titles(page: Page) -> list[str]:
    return page.evaluate("""() => {
        const out = [];
        for (const doc of Bokeh.documents) for (const m of doc.all_models)
            if (m.type === 'Title' && m.text) out.push(String(m.text));
        return out;
    }""")


def shot(page: Page, name: str) -> None:
    """Screenshot of the page scrolled to the top, saved under ``test-artifacts/screenshots/``."""
    page.evaluate("() => { for (const el of document.querySelectorAll('#main, .main, body')) el.scrollTo(0, 0); }")
    page.wait_for_timeout(300)
    page.screenshot(path=SHOTS / name)


def report(capsys, text: str) -> None:
    with capsys.disabled():
        print(f"\n[app latency] {text}")


def test_first_render_and_every_tab(app_page, capsys):
    page = app_page
    report(capsys, f"first page with the first run's diagnostics: {FIRST_RENDER_S[0]:.2f} s")
    SHOTS.mkdir(parents=True, exist_ok=True)
    stages = [str(s) for s in NOMINAL.calib if s not in ("profile", "method")]
    expect(page.locator(".bk-tab")).to_have_count(len(stages) + 1 + len(INVESTIGATION_TABS))
    for i, stage in enumerate(stages):
        open_tab(page, stage)
        expect(page.locator(f".stage-{stage} .chip").first).to_be_visible()
        if stage in WITH_PLOTS:
            expect(page.locator(f".gates-{stage} .qc-badge").first).to_be_visible()
            expect(page.locator(".diag-plot").first).to_be_visible()
        else:
            expect(page.locator(".diag-plot, .diag-table-pane, .no-diagnostics").first).to_be_visible()
        shot(page, f"{i + 1:02d}_{stage}.png")
    open_tab(page, None)
    expect(page.locator(".summary")).to_contain_text("run dir")
    shot(page, f"{len(stages) + 1:02d}_summary.png")


def test_widget_changes_in_three_stages_update_plots_and_badges(app_page, capsys):
    page = app_page
    # Trace: a QC threshold flips the normalised-median badge from pass to warn
    open_tab(page, "trace")
    badge = page.locator(".gates-trace [data-gate='norm_median_offset']")
    expect(badge).to_have_class("qc-badge qc-pass")
    set_input(page, "trace", "quality_checks.median_tolerance", 1e-9)
    expect(page.locator(".stage-trace")).to_contain_text("stale")
    wait_marker(page, "trace", "stale")
    wait_marker(page, "phase", "")          # a QC threshold re-judges trace's gates; no result downstream changes
    click_run(page, 2)
    wait_marker(page, "trace", "")
    expect(badge).to_have_class("qc-badge qc-warn")
    expect(page.locator(".stage-trace")).not_to_contain_text("stale")
    shot(page, "trace_threshold_warn.png")
    # Phase: nbins changes the binned light curve; timed from the edit to the updated plot in the browser
    open_tab(page, "phase")
    title = "Binned white light"
    assert has_points(page, title, NOMINAL.calib.phase.binning.nbins)
    t0 = time.perf_counter()
    set_input(page, "phase", "binning.nbins", 37)
    page.locator(".run-chain button").click()
    wait_points(page, title, 37)
    latency = time.perf_counter() - t0
    wait_run(page, 3)
    report(capsys, f"phase.binning.nbins edit -> Run -> binned curve updated in the browser: {latency:.2f} s")
    shot(page, "phase_nbins_37.png")
    # Dark: a lower clip threshold flags more hot pixels (the map's title carries the count)
    open_tab(page, "dark")
    before = {t for t in plot_titles(page) if t.startswith("Hot/cold pixels")}
    assert len(before) == 1
    set_input(page, "dark", "hot_pixels.sigma", 3.0)
    click_run(page, 4)
    page.wait_for_function("(old) => [...Bokeh.documents[0].all_models].some(m => m.type === 'Title' && "
                           "String(m.text).startsWith('Hot/cold pixels') && m.text !== old)", arg=before.pop())


def test_rerun_from_a_middle_stage_keeps_upstream_cached(app_page):
    # from trace: nominal streams ADC -> flat into CDS and releases the CDS planes once photometry read them,
    # so a rerun from a detector stage or photometry recomputes the detector chain; from trace it is reused
    page = app_page
    open_tab(page, "trace")
    button = page.locator(".rerun-stage button")
    expect(button).to_contain_text(stage_info("trace").title)
    button.click()
    wait_run(page, 5)
    open_tab(page, None)
    for stage in ("adc", "dark", "flat", "cds", "photometry"):
        expect(page.locator(".sum-row.sum-cached", has_text=stage_info(stage).title)).to_have_count(2)
    for stage in ("trace", "phase"):
        expect(page.locator(".sum-row.sum-ran", has_text=stage_info(stage).title)).to_have_count(2)


def test_export_yaml_holds_the_tuned_profile_and_uploads_back(app_page, tmp_path):
    page = app_page
    path = download(page, ".export-yaml", tmp_path)
    # a tuned built-in profile is named as such and gets its own run_dir (no overwrite of runs/nominal)
    assert path.name.startswith("spectramind_nominal-tuned_") and path.suffix == ".yaml"
    exported = yaml.safe_load(path.read_text())
    assert exported["run_dir"].startswith("runs/nominal-tuned-")
    assert exported["calib"]["phase"]["binning"]["nbins"] == 37
    assert exported["calib"]["dark"]["hot_pixels"]["sigma"] == 3.0
    assert exported["calib"]["trace"]["quality_checks"]["median_tolerance"] == 1e-9
    open_tab(page, None)
    expect(page.locator(".config-hash")).to_contain_text(config_hash(compose_config(str(path))))
    # upload an edited copy: the profile and its widgets follow the file
    edited = tmp_path / "edited.yaml"
    edited.write_text(path.read_text().replace("nbins: 37", "nbins: 55"))
    page.locator(".upload-profile input[type=file]").set_input_files(edited)
    expect(page.locator(".summary")).to_contain_text("edited.yaml")
    open_tab(page, "phase")
    expect(page.locator(".cfg-phase-binning-nbins input")).to_have_value("55")
    expect(page.locator(".stage-phase")).to_contain_text("stale")


def test_bad_value_shows_an_error_and_the_app_keeps_working(app_page):
    page = app_page
    open_tab(page, "adc")
    set_input(page, "adc", "saturation.full_well_e", 0)
    alert = page.locator(".config-error")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("calib.adc.saturation.full_well_e")
    expect(alert).to_contain_text("must be > 0")
    expect(page.locator(".cfg-adc-saturation-full-well-e input")).to_have_value("180000")
    open_tab(page, "flat")
    set_input(page, "flat", "quality_checks.flat_mean_range", "[0.8,")
    expect(alert).to_contain_text("not valid YAML")
    set_input(page, "flat", "quality_checks.flat_mean_range", "[0.7, 1.3]")
    expect(alert).to_be_hidden()
    expect(page.locator(".stage-flat")).to_contain_text("stale")
    shot(page, "after_error_recovered.png")


def test_two_sessions_keep_separate_state(browser, app_url):
    (a, ta), (b, tb) = _goto(browser, app_url), _goto(browser, app_url)
    try:
        _await_first_run(a, ta)
        _await_first_run(b, tb)
        open_tab(a, "phase")
        open_tab(b, "phase")
        set_input(a, "phase", "binning.nbins", 21)
        click_run(a, 2)
        nominal = NOMINAL.calib.phase.binning.nbins
        expect(b.locator(".cfg-phase-binning-nbins input")).to_have_value(str(nominal))
        wait_points(a, "Binned white light", 21)
        assert has_points(b, "Binned white light", nominal) and not has_points(b, "Binned white light", 21)
        wait_marker(b, "phase", "")
        b.locator(".pick-instrument").get_by_text("FGS1").click()
        expect(a.locator(".stage-phase")).to_contain_text("AIRS-CH0")
        expect(b.locator(".stage-phase")).to_contain_text("FGS1")
    finally:
        a.context.close()
        b.context.close()


# ---------------------------------------------------------------------------
# issue 12: refused values are visible, files stay confined, profiles in any key order
# ---------------------------------------------------------------------------

CONFINED = "must be a file under the data root, the run directory or configs/"


def status_text(page: Page) -> str:
    """The run-status line (its text lives in the pane's shadow root)."""
    return page.locator(".run-status").evaluate("el => el.shadowRoot ? el.shadowRoot.textContent : el.textContent")


def test_outside_model_path_is_refused_visibly_and_the_box_reverts(app_page, tmp_path):
    page = app_page
    open_tab(page, "top_level_calib")
    secret = tmp_path / "secret.json"
    secret.write_text("TOP-SECRET-LINE\n")
    alert = page.locator(".config-error")
    box = page.locator(".cfg-top_level_calib-model-path input")
    for value in ("/etc/passwd", "/nonexistent/model.json", str(secret)):
        set_input(page, "top_level_calib", "model_path", value)
        expect(alert).to_contain_text(f"calib.top_level_calib.model_path = '{value}': {CONFINED}")
        expect(box).to_have_value("")
        expect(alert).not_to_contain_text("TOP-SECRET")
        expect(alert).not_to_contain_text("root:")              # nothing of /etc/passwd
    shot(page, "outside_model_path_refused.png")


@pytest.mark.parametrize("stage, key, bad, message", [
    ("phase", "binning.nbins", "0", "calib.phase.binning.nbins = 0: must be >= 1 and <= 100000"),
    ("cds", "pairing.window_s", "-1", "calib.cds.pairing.window_s = -1.0: must be > 0"),
    ("phase", "ephemeris.period_days", "-3", "calib.phase.ephemeris.period_days = -3.0: must be > 0"),
])
def test_out_of_range_number_is_refused_visibly_and_the_box_reverts(app_page, stage, key, bad, message):
    page = app_page
    open_tab(page, stage)
    box = page.locator(f".cfg-{stage}-{key.replace('.', '-').replace('_', '-')} input")
    previous = box.input_value()
    set_input(page, stage, key, bad)
    alert = page.locator(".config-error")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text(message)
    expect(box).to_have_value(previous)
    expect(box).not_to_have_value(re.compile("NaN"))
    if key == "binning.nbins":
        shot(page, "nbins_0_refused.png")


def test_resorted_identical_profile_is_accepted_and_recomputes_nothing(app_page, tmp_path):
    page = app_page
    status = status_text(page)
    assert re.search(r"run #(\d+)", status), repr(status)
    number = int(re.search(r"run #(\d+)", status).group(1))
    click_run(page, number + 1)                                     # results match the profile
    exported = download(page, ".export-yaml", tmp_path)
    resorted = tmp_path / "resorted.yaml"
    resorted.write_text(yaml.safe_dump(yaml.safe_load(exported.read_text()), sort_keys=True))
    open_tab(page, "phase")
    set_input(page, "phase", "binning.nbins", 0)                   # an alert that the next success clears
    expect(page.locator(".config-error")).to_be_visible()
    page.locator(".upload-profile input[type=file]").set_input_files(resorted)
    expect(page.locator(".config-error")).to_be_hidden()
    open_tab(page, None)
    expect(page.locator(".summary")).to_contain_text("resorted.yaml")
    expect(page.locator(".summary")).to_contain_text(config_hash(compose_config(str(exported))))
    for stage in ("adc", "phase", "top_level_calib"):
        wait_marker(page, stage, "")                                # nothing is stale
    click_run(page, number + 2)
    status = status_text(page)
    assert "cached" in status and " ran" not in status, status


# ---------------------------------------------------------------------------
# every README command that starts the app, as written (port and data root filled in)
# ---------------------------------------------------------------------------

import test_app_serve as serving  # noqa: E402  -- the README's start lines and the server process helper


@pytest.fixture(scope="module")
def linked_root(demo_root, tmp_path_factory):
    """A copy of the small demo data root with a planet directory ``train/777`` that symlinks outside it."""
    import shutil

    base = tmp_path_factory.mktemp("linked")
    root = base / "data"
    shutil.copytree(demo_root, root, symlinks=True)
    planet = next(p for p in (root / "train").iterdir() if p.is_dir())
    shutil.copytree(planet, base / "outside" / "777")
    (root / "train" / "777").symlink_to(base / "outside" / "777", target_is_directory=True)
    return root


@pytest.mark.parametrize("command", serving.readme_app_commands())
def test_every_readme_command_serves_the_stage_tabs_with_diagnostics(browser, command, demo_root, tmp_path):
    port = serving.free_port()
    tmp = tmp_path / "tmp"              # the server's temp dir: its sessions' run logs say why a stage ran
    tmp.mkdir()
    server = serving.Server(serving.concrete(command, port, demo_root), serving.app_url(command, port),
                            tmp_path / "server.log", {"TMPDIR": str(tmp)})
    page = None
    try:
        server.wait_up()
        assert serving.listening_addresses(port) == {"127.0.0.1"}, command
        page, t0 = _goto(browser, server.url)
        expect(page.locator(".bk-tab").first).to_be_visible(timeout=120_000)
        expect(page.locator(".run-status")).to_contain_text("run #1 done", timeout=300_000)
        stages = [str(s) for s in NOMINAL.calib if s not in ("profile", "method")]
        expect(page.locator(".bk-tab")).to_have_count(len(stages) + 1 + len(INVESTIGATION_TABS))
        # the first visit after the start gets the warm-up run: every stage is served from it
        status = status_text(page)
        assert "cached" in status and " ran" not in status, (status, _why_stages_ran(tmp))
        for stage in WITH_PLOTS:
            open_tab(page, stage)
            expect(page.locator(f".gates-{stage} .qc-badge").first).to_be_visible(timeout=30_000)
            expect(page.locator(f".stage-{stage} .diag-plot, .diag-plot").first).to_be_visible(timeout=30_000)
        options = page.locator(".pick-dataset select option").all_inner_texts()
        if "--data-root" in command:
            assert len(options) == 2 and options[1].startswith("train/")
        else:
            assert options == ["Demo planet (synthetic, with truth)"]
    finally:
        if page is not None:
            page.context.close()
        log = server.stop()
    assert "GlobalHydra" not in log and "Traceback" not in log, log


def _why_stages_ran(tmp: Path) -> list[str]:
    """The sessions' run-log lines that say why a stored output was not reused."""
    return [line for log in tmp.glob("spectramind-app-session-*/run.log") for line in log.read_text().splitlines()
            if any(w in line for w in ("recomput", "not reused", "released", "stale"))]


def test_a_planet_linking_outside_the_data_root_is_not_offered_and_the_refusal_is_visible(browser, linked_root,
                                                                                          tmp_path):
    port = serving.free_port()
    server = serving.Server([str(Path(sys.executable).with_name("spectramind")), "app", "--port", str(port),
                             "--data-root", str(linked_root), "--no-show"], f"http://127.0.0.1:{port}/app",
                            tmp_path / "server.log")
    page = None
    try:
        server.wait_up()
        page, _ = _goto(browser, server.url)
        expect(page.locator(".bk-tab").first).to_be_visible(timeout=120_000)
        options = page.locator(".pick-dataset select option").all_inner_texts()
        assert len(options) == 2 and options[1].startswith("train/") and "777" not in " ".join(options)
        note = page.locator(".refused-planets")
        expect(note).to_contain_text("train/777: planet directory resolves outside the dataset root")
        # the engine refuses a dataset holding such a link (issue 11): the run says so, visibly
        expect(page.locator(".run-status")).to_contain_text("run #1", timeout=300_000)
        expect(page.locator(".config-error")).to_contain_text("planet directory resolves outside the dataset root")
        shot(page, "symlinked_planet_refused.png")
    finally:
        if page is not None:
            page.context.close()
        server.stop()


# ---------------------------------------------------------------------------------------------------------------
# investigation tabs (issue 15): a fresh session of its own, after the tests above
# ---------------------------------------------------------------------------------------------------------------


def extra_tab(page: Page, title: str):
    return page.locator(".bk-tab").filter(has_text=re.compile(rf"^\s*{re.escape(title)}\s*$"))


@pytest.fixture(scope="module")
def fresh_page(browser, app_url):
    page, t0 = _goto(browser, app_url)
    _await_first_run(page, t0)
    yield page
    page.context.close()


def test_rough_edges_are_fixed(fresh_page):
    page = fresh_page
    expect(page.locator(".instrument-label")).to_contain_text("Instrument")
    for title in INVESTIGATION_TABS:
        expect(extra_tab(page, title)).to_have_count(1)
    # the first run reuses the server's run: no "0.00 s" for cached stages, and it says why
    open_tab(page, None)
    expect(page.locator(".cache-note")).to_contain_text("reused")
    cached = page.locator(".sum-row.sum-cached")
    expect(cached.first).to_be_visible()
    for row in cached.all():
        assert row.locator("td").nth(3).inner_text().strip() == "–"     # seconds: none spent, none shown
    # method none: the stage explains why it shows nothing
    open_tab(page, "top_level_calib")
    expect(page.locator(".no-diagnostics")).to_contain_text("method: none")
    # robust ADC histogram range, time axes in hours, a meaningful pair-gap plot
    open_tab(page, "adc")
    page.wait_for_function("() => [...Bokeh.documents].some(d => [...d.all_models].some(m => m.type === 'Title' "
                           "&& String(m.text).startsWith('Raw counts ') && String(m.text).includes('saturated')))")
    assert not any(t.startswith("Raw counts, every") for t in plot_titles(page))
    shot(page, "issue15_adc.png")
    open_tab(page, "cds")
    page.wait_for_function("() => [...Bokeh.documents].some(d => [...d.all_models].some(m => m.type === 'Title' "
                           "&& String(m.text).startsWith('Pair time gap minus nominal')))")
    labels = page.evaluate("""() => { const out = [];
        for (const doc of Bokeh.documents) for (const m of doc.all_models)
            if (m.type === 'LinearAxis' && m.axis_label) out.push(String(m.axis_label));
        return out; }""")
    assert "time (s)" not in labels and "time since visit start (h)" in labels
    shot(page, "issue15_cds.png")
    open_tab(page, "depths")
    page.wait_for_function("() => [...Bokeh.documents].some(d => [...d.all_models].some(m => m.type === 'Title' "
                           "&& String(m.text) === 'Transmission spectrum'))", timeout=RUN_TIMEOUT)
    shot(page, "issue15_depths.png")


def test_light_curves_open_a_channel_from_a_click_on_the_spectrum(fresh_page):
    page = fresh_page
    # one click on the depths tab's spectrum opens the Light curves tab at that channel
    open_tab(page, "depths")
    page.wait_for_function("() => [...Bokeh.documents].some(d => [...d.all_models].some(m => m.type === 'Title' "
                           "&& String(m.text) === 'Transmission spectrum'))", timeout=RUN_TIMEOUT)
    spectrum = page.locator(".stage-plots .diag-plot").first.locator(".bk-Canvas, canvas").first
    box = spectrum.bounding_box()
    spectrum.click(position={"x": box["width"] * 0.55, "y": box["height"] * 0.5})
    head = page.locator(".lc-head .lc-title")
    expect(head).to_contain_text("AIRS-CH0 channel")
    opened = int(head.get_attribute("data-first"))
    expect(extra_tab(page, "Light curves")).to_have_class(re.compile("bk-active"))
    # then a click on the tab's own spectrum: a channel left of the middle
    page.locator(".lc-channel").wait_for()
    spectrum = page.locator(".lc-spectrum .bk-Canvas, .lc-spectrum canvas").first
    expect(spectrum).to_be_visible()
    box = spectrum.bounding_box()
    spectrum.click(position={"x": box["width"] * 0.3, "y": box["height"] * 0.5})
    expect(head).not_to_have_attribute("data-first", str(opened))
    first = int(head.get_attribute("data-first"))
    assert 0 < first < 141                      # left of the middle of the spectrum: a shorter wavelength
    expect(page.locator(".lc-plots .diag-plot")).to_have_count(4)
    titles = plot_titles(page)
    assert any(t.startswith("Phase-folded") for t in titles) and any(t.startswith("Residuals") for t in titles)
    shot(page, "issue15_light_curves.png")


def test_download_results_zip(fresh_page, tmp_path):
    page = fresh_page
    path = download(page, ".download-results", tmp_path)
    assert path.name.startswith("spectramind_results_") and path.suffix == ".zip"
    import zipfile

    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"depths.csv", "qc.json", "config.yaml"} <= names
        rows = zf.read("depths.csv").decode().splitlines()
        assert len(rows) == 2 and rows[0].startswith("planet_id")
        assert yaml.safe_load(zf.read("config.yaml"))["calib"]["phase"]["binning"]["nbins"] == \
            NOMINAL.calib.phase.binning.nbins


def test_download_a_stage_tabs_arrays(fresh_page, tmp_path):
    """The photometry tab's zip holds the shown output (AIRS-CH0): every array matches its recorded checksum."""
    import io
    import json
    import zipfile

    import numpy as np
    import xxhash

    page = fresh_page
    open_tab(page, "photometry")
    path = download(page, ".download-arrays-photometry", tmp_path)
    assert path.name.startswith("spectramind_photometry_AIRS-CH0_") and path.suffix == ".zip"
    with zipfile.ZipFile(path) as zf:
        meta, sums = json.loads(zf.read("meta.json")), json.loads(zf.read("checksums.json"))
        assert (meta["stage"], meta["instrument"]) == ("photometry", "AIRS-CH0")
        assert set(zf.namelist()) == {"meta.json", "checksums.json", *(f"{f}.npy" for f in meta["fields"])}
        for name in set(zf.namelist()) - {"checksums.json"}:
            assert xxhash.xxh3_128(zf.read(name)).hexdigest() == sums[name], name
        flux = np.load(io.BytesIO(zf.read("photometry_flux.npy")))
        assert flux.shape == tuple(meta["fields"]["photometry_flux"]["shape"]) and np.isfinite(flux).all()


def test_save_the_run_under_the_data_root(fresh_page, demo_root):
    from calib_core.runview import load_result

    page = fresh_page
    name = page.locator(".save-run-name input")
    name.fill("browser/kept")
    page.locator(".save-run button").click()
    dest = (demo_root / "runs" / "browser" / "kept").resolve()
    expect(page.locator(".save-run-note")).to_contain_text(f"saved to {dest}")
    assert (dest / "depths.csv").is_file() and load_result(dest).status == "ok"
    page.locator(".save-run button").click()                        # the same name again: refused, visibly
    expect(page.locator(".config-error")).to_contain_text(f"save run: save run as 'browser/kept': {dest} exists")
    name.fill("../outside")
    page.locator(".save-run button").click()
    expect(page.locator(".config-error")).to_contain_text("save run as '../outside': expected a folder name under")
    assert not (demo_root / "outside").exists()


def test_compare_two_runs_shows_exactly_the_changed_key(fresh_page):
    page = fresh_page
    open_tab(page, "phase")
    set_input(page, "phase", "binning.nbins", 41)
    click_next_run(page)
    extra_tab(page, "Compare").click()
    rows = page.locator(".compare-diff .cmp-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-key", "calib.phase.binning.nbins")
    expect(rows.first).to_contain_text("41")
    expect(page.locator(".compare-gates")).to_contain_text("coverage_frac")
    titles = plot_titles(page)
    assert any(t.startswith("Difference (B - A) / combined sigma") for t in titles)
    assert any(t.startswith("White light AIRS-CH0: fits of A and B (white depth A") for t in titles)
    shot(page, "issue15_compare.png")


def test_click_a_pixel_shows_its_series_with_dq_flags(browser, app_url):
    page, t0 = _goto(browser, app_url)             # a session of its own: its CDS form untouched by other tests
    _await_first_run(page, t0)
    try:
        _inspect_a_pixel_then_a_time(page)
    finally:
        page.context.close()


def _inspect_a_pixel_then_a_time(page: Page) -> None:
    open_tab(page, "cds")
    # nominal streams the detector stages (no frame planes): keep CDS's, as the inspector's note says
    expect(page.locator(".px-note-cds")).to_contain_text("cache.write_intermediate")
    box = page.locator(".cfg-cds-cache-write-intermediate input")
    # the stage's common keys sit in a collapsed card (its header answers once the tab's form is wired up)
    header = page.locator(".card-header:visible").filter(has_text="io · validation · logging · cache").first
    for _ in range(5):
        if box.is_visible():
            break
        header.click()
        page.wait_for_timeout(500)
    box.check()
    click_next_run(page)
    frame = page.locator(".px-frame-cds .bk-Canvas, .px-frame-cds canvas").first
    frame.scroll_into_view_if_needed()
    expect(frame).to_be_visible()
    box = frame.bounding_box()
    frame.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.5})
    selected = page.locator(".px-note-cds .px-selected")
    expect(selected).to_contain_text("DQ flags")
    row, column = int(selected.get_attribute("data-row")), int(selected.get_attribute("data-column"))
    assert 0 <= row < 32 and 0 <= column < 356
    page.wait_for_function("([r, c]) => [...Bokeh.documents].some(d => [...d.all_models].some(m => "
                           "m.type === 'Title' && String(m.text).startsWith(`CDS pixel (row ${r}, column ${c})`)))",
                           arg=[row, column], timeout=RUN_TIMEOUT)
    page.locator(".px-series-cds").scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    page.screenshot(path=SHOTS / "issue15_pixel.png")
    # a click early on the pixel's time axis shows the frame taken then (the middle frame was shown)
    series = page.locator(".px-series-cds .bk-Canvas, .px-series-cds canvas").first
    sbox = series.bounding_box()
    series.click(position={"x": sbox["width"] * 0.2, "y": sbox["height"] * 0.5})
    page.wait_for_function("() => [...Bokeh.documents].some(d => [...d.all_models].some(m => m.type === 'Title' "
                           "&& /^CDS electrons: click a pixel \\(frame ([0-9]|1[0-9])\\) at /.test(String(m.text))))",
                           timeout=RUN_TIMEOUT)
    # ... and so does a click on the stage's own flux series (any series over the visit): another frame
    shown = _inspector_frames(page)
    flux = page.locator(".plots-cds .diag-plot .bk-Canvas, .plots-cds .diag-plot canvas").first
    flux.scroll_into_view_if_needed()
    fbox = flux.bounding_box()
    flux.click(position={"x": fbox["width"] * 0.6, "y": fbox["height"] * 0.5})
    deadline = time.monotonic() + RUN_TIMEOUT / 1000
    while not (_inspector_frames(page) - shown):
        assert time.monotonic() < deadline, shown
        page.wait_for_timeout(200)
    assert min(_inspector_frames(page) - shown) > max(shown)      # later on the time axis than the first click


def _inspector_frames(page: Page) -> set[int]:
    """Frame indices named by the pixel inspector's frame titles in the document."""
    titles = [t for t in plot_titles(page) if t.startswith("CDS electrons: click a pixel (frame ")]
    return {int(re.search(r"\(frame (\d+)\)", t).group(1)) for t in titles}


def test_display_controls_show_depths_in_ppm_binned(fresh_page):
    page = fresh_page
    open_tab(page, "depths")
    page.locator(".display-depth-unit").get_by_text("ppm").click()
    box = page.locator(".display-bin input").first
    if box.count():                       # an editable slider value; else drive the slider with the keyboard
        box.fill("4")
        box.press("Enter")
    else:
        handle = page.locator(".display-bin .noUi-handle").first
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
    page.wait_for_function("() => [...Bokeh.documents].some(d => [...d.all_models].some(m => m.type === 'Title' "
                           "&& String(m.text) === 'Transmission spectrum (binned by 4 channels)'))", timeout=RUN_TIMEOUT)
    labels = page.evaluate("() => [...Bokeh.documents].flatMap(d => [...d.all_models]).filter(m => "
                           "m.type === 'LinearAxis' && m.axis_label).map(m => String(m.axis_label))")
    assert "depth (ppm)" in labels, labels
    # every figure's toolbar saves it as PNG
    assert page.evaluate("() => [...Bokeh.documents].flatMap(d => [...d.all_models]).some(m => m.type === 'SaveTool')")
    shot(page, "issue15_display_ppm_binned.png")
    page.locator(".display-depth-unit").get_by_text("(Rp/Rs)^2").click()


@pytest.fixture(scope="module")
def batch_app_url(two_planet_batch, tmp_path_factory):
    """``spectramind app`` on the two-planet data root that holds a ``spectramind batch`` output."""
    root, _ = two_planet_batch
    with served_app(root, tmp_path_factory.mktemp("batch_server") / "app.log") as url:
        yield url


def test_planets_tab_opens_a_planet_of_a_batch(browser, batch_app_url, two_planet_batch):
    root, batch = two_planet_batch
    page, t0 = _goto(browser, batch_app_url)
    try:
        _await_first_run(page, t0)
        extra_tab(page, "Planets").click()
        page.locator(".batch-dir input").fill(str(batch))
        page.locator(".open-batch button").click()
        expect(page.locator(".planets-count")).to_contain_text("2 planets (2 ok)")
        table = page.locator(".planets-table")
        expect(table.locator(".tabulator-row")).to_have_count(2)
        expect(table.locator(".tabulator-row").nth(1)).to_contain_text("3000002")
        # sort by planet id, descending: the second planet comes first; filter on the status column
        header = table.locator(".tabulator-col[tabulator-field='planet_id'] .tabulator-col-title")
        header.click()
        header.click()
        expect(table.locator(".tabulator-row").first).to_contain_text("3000002")
        shot(page, "issue15_planets.png")
        table.locator(".tabulator-row").first.locator(".tabulator-cell[tabulator-field='status']").click()
        # its run opens in the stage tabs: the depths tab, the planet selected, the batch's run directory
        expect(page.locator(".stage-depths")).to_contain_text("Transit depths")
        expect(page.locator(".pick-dataset select")).to_have_value("train/3000002")
        expect(page.locator(".run-status")).to_contain_text("opened planet 3000002")
        page.wait_for_function("() => [...Bokeh.documents].some(d => [...d.all_models].some(m => m.type === 'Title' "
                               "&& String(m.text) === 'Transmission spectrum'))", timeout=RUN_TIMEOUT)
        open_tab(page, None)
        expect(page.locator(".summary .run-dir")).to_contain_text(str(batch / "3000002"))
    finally:
        page.context.close()


# ---------------------------------------------------------------------------------------------------------------
# the walkthrough notebook, executed and rendered as static HTML (issue 15's rough edge)
# ---------------------------------------------------------------------------------------------------------------


def test_the_executed_walkthrough_renders_its_plots_as_static_html(browser, tmp_path):
    """nbconvert's HTML of the executed notebook, opened offline: BokehJS is embedded and the plots draw."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    nb = nbformat.read(ROOT / "notebooks" / "app_walkthrough.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    page_html, _ = HTMLExporter().from_notebook_node(nb)
    path = tmp_path / "walkthrough.html"
    path.write_text(page_html)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                  else route.abort())                                    # a static render: no network, no kernel
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(path.as_uri())
        page.wait_for_function("() => typeof Bokeh !== 'undefined' && [...Bokeh.documents].some(d => "
                               "[...d.all_models].some(m => m.type === 'Title' "
                               "&& String(m.text).startsWith('Binned white light')))", timeout=RUN_TIMEOUT)
        titles = plot_titles(page)
        # the phase plot of section 1 and the inline app's figures (its ADC tab) are drawn
        assert any(t.startswith("Raw counts") for t in titles), titles
        expect(page.locator("canvas").first).to_be_visible()
        assert page.locator("canvas").count() >= 4
        assert not errors, errors
    finally:
        context.close()
