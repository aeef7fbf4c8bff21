"""The diagnostics app without a browser: schema -> widgets, widget <-> profile binding, YAML export
round trip, invalid values, data-root restriction, rendering of plot data, session isolation."""

from __future__ import annotations

import dataclasses

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import pytest
import yaml
from omegaconf import OmegaConf

from spectramind_app.render import LivePlot, plot_layout, render, render_element
from spectramind_app.state import DEMO_LABEL, AppState, list_datasets
from spectramind_app.views import AppView, gate_level
from spectramind_app.widgets import field_specs, format_value, parse_value
from calib_core.chain import run_chain
from calib_core.config import compose_config, config_hash, opt
from calib_core.diagnostics import Bars, Histogram, Image, Series, Table
from calib_core.stages import stage_schema
from calib_core.stages.base import Gate


@pytest.fixture
def state(demo_root, tmp_path):
    s = AppState(data_root=demo_root, work_dir=tmp_path)
    yield s
    s.close()


@pytest.fixture(scope="module")
def ran_state(demo_root, tmp_path_factory):
    """A session that ran the nominal profile once on the small demo planet."""
    s = AppState(data_root=demo_root, work_dir=tmp_path_factory.mktemp("ran"))
    view = AppView(s)
    assert s.run() is not None, s.error
    yield s, view
    s.close()


def test_field_specs_follow_the_schema():
    specs = {s.key: s for s in field_specs(stage_schema("adc"))}
    assert specs["enabled"].kind == "bool"
    assert specs["conversion.source"].kind == "choice"
    assert specs["conversion.source"].choices == ("adc_info", "value")
    level = specs["saturation.level_dn"]
    assert (level.kind, level.start, level.end, level.unit) == ("int", 1, 65535, "DN")
    assert specs["saturation.full_well_e"].kind == "float" and specs["saturation.full_well_e"].start == 0
    assert specs["quality_checks.action_on_fail"].choices == ("warn", "error")
    for name in stage_schema("adc").__dataclass_fields__:
        assert any(k == name or k.startswith(name + ".") for k in specs), name


@dataclass
class _Inner:
    window_s: Any = opt(None, nullable=True, gt=0, unit="s", doc="nullable number")


@dataclass
class _Schema:
    mode: str = opt("a", choices=("a", "b"), nullable=True)
    bands: list = opt(["x"], choices=("x", "y"))
    edges: list = opt([0.5, 1.5])
    label: str = opt("")
    anything: Any = opt(None, nullable=True)
    inner: _Inner = opt(_Inner)


def test_field_kinds_parse_and_format():
    specs = {s.key: s for s in field_specs(_Schema)}
    assert {k: s.kind for k, s in specs.items()} == {
        "mode": "choice", "bands": "multichoice", "edges": "list", "label": "text", "anything": "yaml",
        "inner.window_s": "yaml"}
    assert specs["inner.window_s"].label == "window_s [s]" and specs["inner.window_s"].section == "inner"
    assert format_value(specs["edges"], [0.5, 1.5]) == "[0.5, 1.5]"
    assert parse_value(specs["edges"], "[0.5, 2]") == [0.5, 2]
    with pytest.raises(ValueError, match="must be a list"):
        parse_value(specs["edges"], "3")
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_value(specs["anything"], "[1,")
    assert parse_value(specs["anything"], "") is None and format_value(specs["anything"], None) == ""
    assert parse_value(specs["anything"], "3.5") == 3.5 and parse_value(specs["anything"], "abc") == "abc"
    assert format_value(specs["anything"], "yes") == "'yes'"
    assert parse_value(specs["anything"], format_value(specs["anything"], "yes")) == "yes"
    assert parse_value(specs["label"], "  ") == ""


def test_every_stage_of_every_profile_gets_a_form(demo_root, tmp_path):
    for profile in ("fast", "nominal", "strict"):
        s = AppState(data_root=demo_root, work_dir=tmp_path, profile=profile)
        view = AppView(s)
        assert list(view.stage_tabs) == s.stages == s.stages_of(compose_config(f"calib/{profile}"))
        for stage, tab in view.stage_tabs.items():
            assert set(tab.form.widgets) == {spec.key for spec in field_specs(stage_schema(stage))}
        s.close()


def test_widget_change_updates_profile_and_marks_downstream_stale(state):
    view = AppView(state)
    state.stale = []
    nbins = view.stage_tabs["phase"].form.widgets["binning.nbins"]
    nbins.value = 77
    assert state.cfg.calib.phase.binning.nbins == 77
    assert state.stale == state.stages[state.stages.index("phase"):]
    switch = view.stage_tabs["adc"].form.widgets["reference_pixel.use"]
    switch.value = not switch.value
    assert state.cfg.calib.adc.reference_pixel.use is switch.value
    assert state.stale == state.stages


def test_loading_a_profile_sets_the_widgets(state):
    view = AppView(state)
    widget = view.stage_tabs["phase"].form.widgets["binning.nbins"]
    assert widget.value == compose_config("calib/nominal").calib.phase.binning.nbins
    state.load_profile("strict")
    strict = compose_config("calib/strict")
    assert view.stage_tabs["phase"].form.widgets["binning.nbins"].value == strict.calib.phase.binning.nbins
    assert view.profile_select.value == "strict"
    state.load_profile("fast")
    assert list(view.stage_tabs) == state.stages
    assert "dark" not in view.stage_tabs
    assert view.stage_tabs["adc"].form.widgets["linearization.method"].value == "none"


def test_invalid_values_are_refused_and_reverted(state):
    view = AppView(state)
    form = view.stage_tabs["adc"].form
    before = state.export_yaml()
    form.widgets["saturation.full_well_e"].value = -5.0
    assert "calib.adc.saturation.full_well_e" in state.error and "must be > 0" in state.error
    assert form.widgets["saturation.full_well_e"].value == state.cfg.calib.adc.saturation.full_well_e
    assert view.alert.visible and "must be > 0" in view.alert.object
    text_specs = [k for k, w in form.widgets.items() if isinstance(w, pn.widgets.TextInput)]
    assert text_specs, "adc has a text-edited key"
    flat = view.stage_tabs["flat"].form
    flat.widgets["quality_checks.flat_mean_range"].value = "[0.8, "
    assert "not valid YAML" in state.error
    assert flat.widgets["quality_checks.flat_mean_range"].value == "[0.8, 1.2]"
    assert state.export_yaml() == before
    form.widgets["saturation.full_well_e"].value = 1.5e5          # the app keeps working
    assert state.error == "" and not view.alert.visible
    assert state.cfg.calib.adc.saturation.full_well_e == 1.5e5


def test_yaml_export_round_trip(state, tmp_path):
    view = AppView(state)
    view.stage_tabs["phase"].form.widgets["binning.nbins"].value = 64
    view.stage_tabs["adc"].form.widgets["quality_checks.max_zero_frac"].value = 0.02
    path = tmp_path / state.export_filename
    path.write_text(view._export().read())
    loaded = yaml.safe_load(path.read_text())
    assert loaded["calib"]["phase"]["binning"]["nbins"] == 64
    assert loaded["calib"]["adc"]["quality_checks"]["max_zero_frac"] == 0.02
    assert loaded["data"]["root"] == str(state.data_root)
    assert config_hash(compose_config(str(path))) == state.config_hash
    other = AppState(data_root=state.data_root, work_dir=tmp_path)
    other_view = AppView(other)
    assert other.load_profile_file(path.name, path.read_bytes())
    assert other.config_hash == state.config_hash
    assert other_view.stage_tabs["phase"].form.widgets["binning.nbins"].value == 64
    assert other_view.profile_select.value == path.name == other.profile
    other.close()


def test_exported_profile_reproduces_the_apps_run_on_the_command_line(ran_state, tmp_path):
    state, _ = ran_state
    path = tmp_path / "exported.yaml"
    path.write_text(state.export_yaml())
    out = subprocess.run([sys.executable, "-m", "calib_core.cli", "calibrate", "--config-name", str(path),
                          f"run_dir={tmp_path / 'cli_run'}"], capture_output=True, text=True, check=True).stdout
    assert f"config_hash: {state.result.config_hash[:16]}" in out
    assert state.result.config_hash == state.config_hash
    app_csv = (state.result.run_dir / "depths.csv").read_text()
    assert (tmp_path / "cli_run" / "depths.csv").read_text() == app_csv


def test_uploaded_profile_cannot_point_outside_the_data_root(state, tmp_path):
    cfg_text = state.export_yaml().replace(f"root: {state.data_root}", "root: /etc")
    assert "root: /etc" in cfg_text
    assert state.load_profile_file("evil.yaml", cfg_text.encode())
    assert state.cfg.data.root == str(state.data_root)
    with pytest.raises(ValueError):
        state.dataset = "/etc"
    assert not state.load_profile_file("broken.yaml", b"calib: [1, 2]")
    assert "broken.yaml" in state.error
    assert not state.load_profile_file("unknown.yaml", b"calib:\n  adc:\n    nope: 1\n")
    assert "calib.adc.nope" in state.error
    assert state.cfg.data.root == str(state.data_root)


def test_datasets_are_limited_to_the_data_root(demo_root):
    labels = [d.label for d in list_datasets(demo_root)]
    assert labels[0] == DEMO_LABEL and len(labels) == 2 and labels[1].startswith("train/")
    assert [d.label for d in list_datasets(None)] == [DEMO_LABEL]


def test_sessions_are_isolated(demo_root, tmp_path):
    a = AppState(data_root=demo_root, work_dir=tmp_path)
    b = AppState(work_dir=tmp_path)
    va, vb = AppView(a), AppView(b)
    va.stage_tabs["phase"].form.widgets["binning.nbins"].value = 33
    assert b.cfg.calib.phase.binning.nbins != 33
    assert vb.stage_tabs["phase"].form.widgets["binning.nbins"].value != 33
    assert a.run_dir != b.run_dir and a.run_dir.is_dir() and b.run_dir.is_dir()
    assert b.param.dataset.objects == [DEMO_LABEL] and len(a.param.dataset.objects) == 2
    assert a.cfg is not b.cfg and va.stage_tabs["adc"].form.widgets is not vb.stage_tabs["adc"].form.widgets
    a.close()
    assert not a.run_dir.exists() and b.run_dir.is_dir()
    b.close()


def test_rerun_from_a_middle_stage_recomputes_only_downstream(ran_state):
    state, _ = ran_state
    result = state.run(from_stage="cds")
    statuses = {(r.stage, r.instrument): (r.status, r.reason) for r in result.records}
    order = state.enabled
    for (stage, _), (status, reason) in statuses.items():
        # ADC -> dark -> flat stream into CDS (nominal keeps no plane): they rerun with it, as one unit
        expected = "ran" if order.index(stage) >= order.index("cds") or "streamed into 'cds'" in reason \
            else "cached"
        assert status == expected, (stage, status)


def test_late_change_reruns_only_downstream_and_qc_threshold_flips_badge(ran_state):
    state, view = ran_state
    state.run()
    view.stage_tabs["phase"].form.widgets["binning.nbins"].value = 40
    result = state.run()
    ran = {r.stage for r in result.records if r.status == "ran"}
    assert "phase" in ran and not ran & {"adc", "dark", "flat", "cds", "photometry", "trace"}
    tab = view.stage_tabs["adc"]
    tab.refresh_status()
    assert "qc-pass" in tab.badges.object and "data-gate='saturation_pileup'" in tab.badges.object
    tab.form.widgets["quality_checks.max_saturated_frac"].value = 0.0
    assert state.stale[0] == "adc"
    state.run()
    gate = next(g for g in state.record("adc").gates if g.name == "saturation_pileup")
    assert gate_level(gate) == "warn"
    assert "qc-warn" in tab.badges.object


def test_error_gate_stops_the_run_and_shows_fail(ran_state):
    state, view = ran_state
    form = view.stage_tabs["trace"].form
    form.widgets["quality_checks.action_on_fail"].value = "error"
    form.widgets["quality_checks.median_tolerance"].value = 1e-12
    result = state.run()
    assert result.status == "failed" and "norm_median_offset" in state.error
    assert state.progress.text.endswith("failed")
    failed = next(r for r in result.records if r.status == "failed")
    assert failed.stage == "trace"
    state.instrument = failed.instrument
    gate = next(g for g in state.record("trace").gates if g.name == "norm_median_offset")
    assert gate_level(gate) == "fail"
    assert state.stale[0] == "trace"
    view.stage_tabs["trace"].refresh_status()
    assert "qc-fail" in view.stage_tabs["trace"].badges.object
    form.widgets["quality_checks.action_on_fail"].value = "warn"
    assert state.run().status == "ok" and state.stale == [] and state.error == ""
    state.instrument = "AIRS-CH0"


def test_gate_levels():
    assert gate_level(Gate("g", 0.1, "< 1", True)) == "pass"
    assert gate_level(Gate("g", 2.0, "< 1", False, action="warn")) == "warn"
    assert gate_level(Gate("g", 2.0, "< 1", False, action="error")) == "fail"


def test_render_every_kind():
    hist = Histogram("h", np.array([1, 0, 5]), np.arange(4.0), xlabel="DN", logy=True)
    assert isinstance(render_element(hist), hv.Histogram)
    img = Image("i", np.zeros((4, 6)), xlabel="col", ylabel="row", clabel="e-")
    assert isinstance(render_element(img), hv.Image)
    extents = render_element(dataclasses.replace(img, x=(0.0, 2.0), y=(1.0, 5.0)))
    assert extents.data.shape == (6, 4)
    assert extents.bounds.lbrt() == (0.0, 1.0, 2.0, 5.0)
    curve = Series("c", np.arange(5.0), np.ones(5), xlabel="phase", ylabel="flux", yerr=np.full(5, 0.1),
                   label="binned", overlay=[Series("", np.arange(5.0), np.zeros(5), label="truth")])
    overlay = render_element(curve)
    assert isinstance(overlay, hv.Overlay)
    assert {type(el) for el in overlay} >= {hv.Curve, hv.ErrorBars}
    bars = Bars("b", ["a", "b"], [1, 2])
    assert isinstance(render_element(bars), hv.Bars)
    for plot in (hist, img, curve, bars):
        assert isinstance(render(plot), pn.pane.HoloViews)
    table = render(Table("t", [["gain", 0.4369], ["<b>", "x"]]))
    assert "0.4369" in table.object and "&lt;b&gt;" in table.object

    @dataclasses.dataclass
    class Sankey:
        title: str
        data: Any
        kind = "sankey"

    unknown = render(Sankey("s", np.zeros((1000, 1000))))
    assert "has no renderer" in unknown.object and "array (1000, 1000)" in unknown.object
    assert len(unknown.object) < 2000
    broken = render(Series("no y", np.arange(3.0), None))
    assert "unrenderable" in broken.object


def _figure_models(root: Any) -> tuple[Any, list, Any]:
    """(figure, data sources, title) under the Bokeh model of a rendered pane."""
    from bokeh.models import ColumnDataSource, Plot, Title

    refs = root.references()
    return (next(m for m in refs if isinstance(m, Plot)), [m for m in refs if isinstance(m, ColumnDataSource)],
            next(m for m in refs if isinstance(m, Title)))


def _lengths(sources: list) -> set[int]:
    return {len(next(iter(s.data.values()))) for s in sources if s.data}


def test_live_plot_puts_new_data_into_the_same_figure():
    x = np.linspace(-0.1, 0.1, 50)
    plot = Series("Binned (50)", x, 1 - x ** 2, xlabel="phase", ylabel="flux", yerr=np.full(50, 1e-3),
                  label="binned", overlay=[Series("", x, np.ones(50), label="model")])
    live = LivePlot(plot)
    root = live.pane.get_root()
    figure, sources, title = _figure_models(root)
    assert title.text == "Binned (50)" and _lengths(sources) == {50}
    x2 = np.linspace(2.0, 3.0, 17)
    new = dataclasses.replace(plot, title="Binned (17)", x=x2, y=1 - x2 ** 2, yerr=np.full(17, 1e-3),
                              overlay=[Series("", x2, np.ones(17), label="model")])
    element = live.prepare(new)
    assert element is not None
    live.show(element)
    after, sources_after, title_after = _figure_models(root)
    assert after is figure and sources_after == sources and title_after is title   # same Bokeh models
    assert title.text == "Binned (17)"
    assert _lengths(sources) == {17}
    assert figure.x_range.start >= 1.9 and figure.x_range.end <= 3.1                # ranges follow the data
    # another layout (a layer label, error bars, the axis labels, the kind) is not put into this figure
    assert live.prepare(dataclasses.replace(new, overlay=[Series("", x2, np.ones(17), label="truth")])) is None
    assert live.prepare(dataclasses.replace(new, yerr=None)) is None
    assert live.prepare(dataclasses.replace(new, xlabel="time")) is None
    assert live.prepare(Bars("b", ["a"], [1])) is None
    assert live.prepare(dataclasses.replace(new, y=None)) is None                   # unrenderable
    assert plot_layout(new) == plot_layout(plot) != plot_layout(Histogram("h", [1], [0.0, 1.0]))


def test_live_plot_colour_ranges_and_categories_follow_new_data():
    from bokeh.models import LinearColorMapper, Plot

    image = Image("i", np.arange(12.0).reshape(3, 4), xlabel="col", ylabel="row", clabel="e-")
    live = LivePlot(image)
    root = live.pane.get_root()
    mapper = next(m for m in root.references() if isinstance(m, LinearColorMapper))
    figure = next(m for m in root.references() if isinstance(m, Plot))
    assert (mapper.low, mapper.high) == (0, 11)
    live.show(live.prepare(dataclasses.replace(image, data=100 + np.arange(30.0).reshape(5, 6))))
    assert (mapper.low, mapper.high) == (100, 129)
    assert (figure.x_range.end, figure.y_range.end) == (6, 5)
    bars = Bars("b", ["a", "b"], [1, 2])
    live = LivePlot(bars)
    figure = next(m for m in live.pane.get_root().references() if isinstance(m, Plot))
    live.show(live.prepare(dataclasses.replace(bars, labels=["c", "d", "e"], values=[5, 9, 1])))
    assert list(figure.x_range.factors) == ["c", "d", "e"] and figure.y_range.end > 9


def test_rerun_updates_a_tabs_figures_in_place(demo_root, tmp_path):
    state = AppState(data_root=demo_root, work_dir=tmp_path)
    view = AppView(state)
    tab = view.stage_tabs["phase"]
    assert state.run() is not None, state.error
    tab.refresh_plots()
    panes = [pane for row in tab.plots.objects for pane in row]
    roots = [pane.get_root() for pane in panes]
    before = [_figure_models(root) for root in roots]
    nbins = state.cfg.calib.phase.binning.nbins
    assert nbins != 37 and nbins in _lengths(next(m for m in before if m[2].text.startswith("Binned white"))[1])
    tab.form.widgets["binning.nbins"].value = 37
    assert state.run() is not None, state.error
    tab.refresh_plots()
    assert [pane for row in tab.plots.objects for pane in row] == panes
    after = [_figure_models(root) for root in roots]
    assert [(f, s) for f, s, _ in after] == [(f, s) for f, s, _ in before]       # same figures and sources
    curve = next(models for models in after if models[2].text.startswith("Binned white light"))
    assert 37 in _lengths(curve[1]) and nbins not in _lengths(curve[1])
    expected = [item.title for item in state.diagnostics("phase") if not isinstance(item, Table)]
    assert [models[2].text for models in after] == expected
    state.close()


def test_only_tabs_whose_stage_output_changed_are_redrawn(demo_root, tmp_path, monkeypatch):
    state = AppState(data_root=demo_root, work_dir=tmp_path)
    view = AppView(state)
    assert state.run() is not None, state.error
    for stage in ("adc", "phase"):
        view.stage_tabs[stage].refresh_plots()
    asked = []
    diagnostics = state.diagnostics
    monkeypatch.setattr(state, "diagnostics", lambda stage: asked.append(stage) or diagnostics(stage))
    view.stage_tabs["phase"].form.widgets["binning.nbins"].value = 37
    assert state.run() is not None, state.error
    assert state.record("adc").status == "cached" and state.record("phase").status == "ran"
    for stage in ("adc", "phase"):
        view.stage_tabs[stage].refresh_plots()
    assert asked == ["phase"]                       # the cached ADC output is not drawn again
    state.instrument = "FGS1"
    view.stage_tabs["adc"].refresh_plots()
    assert asked == ["phase", "adc"]                # another instrument is another output
    state.close()


def test_every_stage_tab_renders_its_diagnostics(ran_state):
    state, view = ran_state
    for instrument in ("AIRS-CH0", "FGS1"):
        state.instrument = instrument
        for stage, tab in view.stage_tabs.items():
            if stage not in state.enabled:
                continue
            tab.refresh_plots()
            shown = [*tab.plots.objects, *tab.tables.objects]
            assert shown, (stage, instrument)
            for row in tab.plots.objects:
                for pane in row:
                    pane.get_root()
    view.tabs.active = len(view.stage_tabs)
    assert state.config_hash in view.summary.pane.object
    assert str(state.run_dir) in view.summary.pane.object


def test_display_controls_change_what_the_stage_tabs_draw_not_the_outputs(ran_state):
    """ppm and binning on the depths tab, linear histograms, clipped log images; the run's arrays stay as stored."""
    state, view = ran_state
    mu = np.load(f"{state.record('depths').output_dir}/mu.npy")
    try:
        state.param.update(depth_unit="ppm", bin_channels=4, hist_scale="linear", stretch="log", clip=True)
        spectrum = state.diagnostics("depths")[0]
        assert spectrum.ylabel == "depth (ppm)" and "binned by 4 channels" in spectrum.title
        assert spectrum.y[0] == pytest.approx(mu[0] * 1e6)                     # FGS1: one channel, its own bin
        assert np.nanmedian(spectrum.y[2:]) == pytest.approx(np.median(mu[1:]) * 1e6, rel=0.1)
        assert np.count_nonzero(np.isfinite(spectrum.y)) == 1 + -(-(mu.size - 1) // 4)
        view.tabs.active = list(view.stage_tabs).index("depths")      # the open tab is redrawn as displayed
        shown = view.stage_tabs["depths"]._live[0]._pipe.data
        assert "binned by 4 channels" in shown.opts.get().kwargs["title"]
        state.instrument = "AIRS-CH0"
        images = [p for p in state.diagnostics("flat") if isinstance(p, Image)]
        assert images and all(p.stretch == "log" and (p.clim is None or p.clim[0] < p.clim[1]) for p in images)
        hists = [p for p in state.diagnostics("adc") if isinstance(p, Histogram)]
        assert hists and not any(p.logy for p in hists)
        np.testing.assert_array_equal(np.load(f"{state.record('depths').output_dir}/mu.npy"), mu)
    finally:
        state.param.update(depth_unit="(Rp/Rs)^2", bin_channels=1, hist_scale="auto", stretch="linear", clip=False)
    assert state.diagnostics("depths")[0].ylabel == "(Rp/Rs)^2"


def test_a_click_on_a_time_series_of_a_frame_stage_shows_that_frame(state):
    """The CDS tab: a click on its flux series (any series over the visit) shows the frame of that time."""
    from calib_core.runview import frame_at

    view = AppView(state)
    tab = view.stage_tabs["cds"]
    view.tabs.active = list(view.stage_tabs).index("cds")
    assert state.run() is not None, state.error
    tab.refresh_plots()
    flux = state.diagnostics("cds")[0]
    assert flux.xlabel == "time since visit start (h)" and tab._tap_handler(flux) == tab.inspector.show_time
    tab.inspector.show_time(2.0)                       # nominal streams CDS's planes: the note says so
    assert "no frame planes stored" in tab.inspector.note.object
    tab.form.widgets["cache.write_intermediate"].value = True
    assert state.run() is not None, state.error
    tab.refresh_plots()
    out = state.result.output("cds", "AIRS-CH0")
    for t in (0.5, 3.3, 7.0):
        tab.inspector.show_time(t)
        assert tab.inspector.frame_index == frame_at(out, t)
        assert f"(frame {frame_at(out, t)}) at " in tab.inspector.frame.object.opts.get().kwargs["title"]


def test_owned_tempdirs_of_dead_processes_are_swept(tmp_path):
    """A server killed without its exit handlers leaves runs behind; the next process removes them."""
    import subprocess
    import sys

    from spectramind_app.state import owned_tempdir

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = tmp_path / "spectramind-app-session-old"
    leftover.mkdir()
    (leftover / ".owner-pid").write_text(dead.stdout.strip())
    (leftover / "big.npy").write_bytes(b"0" * 1000)
    foreign = tmp_path / "spectramind-app-session-foreign"      # no owner file: not ours to judge
    foreign.mkdir()
    first = owned_tempdir("spectramind-app-session-", tmp_path)
    assert not leftover.exists() and foreign.is_dir()
    assert (first / ".owner-pid").read_text() == str(__import__("os").getpid())
    second = owned_tempdir("spectramind-app-session-", tmp_path)
    assert first.is_dir() and second.is_dir() and first != second   # a live owner's directories stay


# ---------------------------------------------------------------------------
# issue 12: confined files, server-side bounds, profiles in any key order, no needless recompute
# ---------------------------------------------------------------------------


def test_file_values_outside_the_roots_are_refused_alike_and_reverted(state, tmp_path):
    from calib_core.paths import CONFINED

    view = AppView(state)
    box = view.stage_tabs["top_level_calib"].form.widgets["model_path"]
    secret = tmp_path / "secret.json"
    secret.write_text("TOP-SECRET-LINE\n")
    before = state.export_yaml()
    for value in ("/etc/passwd", "/nonexistent/model.json", str(secret)):
        box.value = value
        assert state.error == f"calib.top_level_calib.model_path = {value!r}: {CONFINED}"
        assert view.alert.visible and "TOP-SECRET" not in view.alert.object
        assert box.value == ""                                     # reverted to the profile's null
    assert state.export_yaml() == before
    dark = view.stage_tabs["dark"].form.widgets["per_pixel_map.path"]
    dark.value = "../../etc/passwd"
    assert CONFINED in state.error and not state.cfg.calib.dark.per_pixel_map.path and dark.value == ""
    # an uploaded profile naming an outside file is refused with the same line
    text = before.replace("model_path: null", f"model_path: {secret}")
    assert not state.load_profile_file("evil.yaml", text.encode())
    assert f"model_path = '{secret}': {CONFINED}" in state.error
    assert state.cfg.calib.top_level_calib.model_path is None
    # inside the data root: accepted (a relative path is taken against the root)
    maps = state.data_root / "app-maps"
    maps.mkdir(exist_ok=True)
    (maps / "model.json").write_text("{}")
    box.value = "app-maps/model.json"
    assert state.error == "" and state.cfg.calib.top_level_calib.model_path == "app-maps/model.json"


@pytest.mark.parametrize("stage, key, bad, message", [
    ("phase", "binning.nbins", 0, "calib.phase.binning.nbins = 0: must be >= 1 and <= 100000"),
    ("cds", "pairing.window_s", -1.0, "calib.cds.pairing.window_s = -1.0: must be > 0"),
    ("phase", "ephemeris.period_days", "-3", "calib.phase.ephemeris.period_days = -3.0: must be > 0"),
])
def test_out_of_range_numbers_reach_the_server_and_are_refused_with_the_engines_message(state, stage, key, bad,
                                                                                          message):
    view = AppView(state)
    box = view.stage_tabs[stage].form.widgets[key]
    previous = box.value
    spec = {s.key: s for s in field_specs(stage_schema(stage))}[key]
    # the browser widget has no bounds of its own (they would stop the value unseen); the tooltip shows them
    assert getattr(box, "start", None) is None and getattr(box, "end", None) is None
    assert spec.bounds and spec.bounds in box.description
    box.value = bad
    assert state.error == message and view.alert.visible and message in view.alert.object
    assert box.value == previous
    assert format_value(spec, OmegaConf.select(state.cfg, f"calib.{stage}.{key}")) == previous


def test_identical_or_resorted_profile_recomputes_nothing_and_clears_alerts(ran_state, tmp_path):
    state, view = ran_state
    assert state.run() is not None and state.stale == []              # current results (earlier tests edit it)
    resorted = yaml.safe_dump(yaml.safe_load(state.export_yaml()), sort_keys=True)
    view.stage_tabs["phase"].form.widgets["binning.nbins"].value = 0
    assert "must be >= 1" in state.error and view.alert.visible
    assert state.load_profile_file("resorted.yaml", resorted.encode()), state.error
    assert state.error == "" and not view.alert.visible            # the alert clears on the next success
    assert state.stale == []                                        # nothing it changes
    result = state.run()
    assert {r.status for r in result.records} == {"cached"}
    assert state.load_profile_file("again.yaml", state.export_yaml().encode())
    assert state.stale == []
    nbins = state.cfg.calib.phase.binning.nbins
    changed = state.export_yaml().replace(f"nbins: {nbins}", f"nbins: {nbins + 3}")
    assert changed != state.export_yaml()
    assert state.load_profile_file("changed.yaml", changed.encode())
    assert state.stale == state.stages[state.stages.index("phase"):]


def test_a_planet_file_linking_outside_the_root_is_refused_without_its_content(demo_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(demo_root, root, symlinks=True)
    secret = tmp_path / "outside" / "star.csv"
    secret.parent.mkdir()
    secret.write_text("planet_id,TOP-SECRET-LINE\n1,2\n")
    errors = []
    for target in (secret, tmp_path / "outside" / "gone.csv"):            # an existing and a dangling target
        link = root / "train_star_info.csv"
        link.unlink()
        link.symlink_to(target)
        s = AppState(data_root=root, work_dir=tmp_path)
        try:
            assert s.run() is None or s.result.status == "failed"
            errors.append(s.error)
        finally:
            s.close()
    assert errors[0] == errors[1]
    assert "train_star_info.csv: star info resolves outside the dataset root" in errors[0]
    assert "TOP-SECRET" not in errors[0]


def test_a_planet_directory_linking_outside_is_not_offered_and_the_picker_says_why(demo_root, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(demo_root, root, symlinks=True)
    messages = []
    for target in (demo_root / "train", tmp_path / "gone"):        # an existing and a dangling target
        link = root / "train" / "777"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target, target_is_directory=True)
        s = AppState(data_root=root, work_dir=tmp_path)
        view = AppView(s)
        try:
            assert [d for d in s.datasets if "777" in d] == [] and len(s.datasets) == 2
            assert view.refused_note.visible and "777" in view.refused_note.object
            messages.append(s.refused_planets)
        finally:
            s.close()
    assert messages[0] == messages[1] and len(messages[0]) == 1
    assert "planet directory resolves outside the dataset root" in messages[0][0]
    assert not AppView(AppState(data_root=demo_root, work_dir=tmp_path)).refused_note.visible
