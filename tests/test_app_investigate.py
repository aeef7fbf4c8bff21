"""The app's investigation features without a browser: light curves tab, compare tab, results download,
tuned export naming, and the rough edges fixed in the stage tabs and summary."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import yaml

from calib_core.config import compose_config, config_hash
from calib_core.diagnostics import Series
from spectramind_app.compare import CompareTab
from spectramind_app.lightcurves import LightCurvesTab
from spectramind_app.render import plot_layout, render_element
from spectramind_app.state import AppState
from spectramind_app.views import AppView


@pytest.fixture(scope="module")
def ran(demo_root, tmp_path_factory):
    """A session that ran the nominal profile once, then once more with phase.binning.nbins = 37."""
    s = AppState(data_root=demo_root, work_dir=tmp_path_factory.mktemp("investigate"))
    view = AppView(s)
    assert s.run() is not None, s.error
    yield s, view
    s.close()


def _tab(view: AppView, cls: type):
    return next(t for _, t in view.extra_tabs if isinstance(t, cls))


def test_tabs_follow_the_contract(ran):
    _, view = ran
    names = [view.tabs._names[i] for i in range(len(view.tabs))]
    assert names[-4:] == ["Summary", "Light curves", "Compare", "Planets"]


def test_light_curves_tab_opens_a_channel_from_a_click(ran):
    state, view = ran
    tab = _tab(view, LightCurvesTab)
    view.tabs.active = len(view.stage_tabs) + 1
    assert "AIRS-CH0 channel" in tab.head.object
    grid = tab._grid
    assert tab.channel.end == grid.size - 1
    tab._tap.event(x=float(grid[40]) + 1e-4, y=0.0)     # a click on the spectrum near channel 40
    assert tab.channel.value == 40
    assert "data-first='40'" in tab.head.object and f"{grid[40]:.3f} um" in tab.head.object
    assert len(tab.plots.objects) == 4
    tab.width.value = 8
    tab.width.param.trigger("value_throttled")
    assert "channels 40-47" in tab.head.object
    state.instrument = "FGS1"
    assert "FGS1 channel 0" in tab.head.object and tab.channel.disabled
    state.instrument = "AIRS-CH0"


def test_a_click_on_the_depths_spectrum_opens_the_channel(ran):
    state, view = ran
    view.tabs.active = list(view.stage_tabs).index("depths")
    depths = view.stage_tabs["depths"]
    (tap,) = depths._taps
    lc = _tab(view, LightCurvesTab)
    tap.event(x=0.7, y=0.01)                             # FGS1's single channel
    assert state.instrument == "FGS1" and view.tabs.active == len(view.stage_tabs) + 1
    assert "FGS1 channel 0" in lc.head.object
    state.instrument = "AIRS-CH0"
    view.tabs.active = list(view.stage_tabs).index("depths")
    tap.event(x=3.0, y=0.01)
    assert state.instrument == "AIRS-CH0" and view.tabs.active == len(view.stage_tabs) + 1
    grid = lc._grid
    assert lc.channel.value == int(np.argmin(np.abs(grid - 3.0)))
    assert f"data-first='{lc.channel.value}'" in lc.head.object


def test_compare_tab_shows_exactly_the_changed_key(ran):
    state, view = ran
    tab = _tab(view, CompareTab)
    assert state.set_key("calib.phase.binning.nbins", 37)
    assert state.run() is not None
    view.tabs.active = len(view.stage_tabs) + 2
    assert tab.pick_a.value.startswith("run #1") and tab.pick_b.value.startswith("run #2")
    assert tab.diff.object.count("class='cmp-row'") == 1
    assert "data-key='calib.phase.binning.nbins'" in tab.diff.object
    z_plot = tab.plots.objects[1].object
    assert "max |z|" in z_plot.opts.get().kwargs["title"]
    tab.pick_b.value = tab.pick_a.value
    assert "identical configs" in tab.diff.object


def test_download_results_zip_and_tuned_export(ran, tmp_path):
    state, view = ran
    button = view.results_download
    assert not button.disabled and button.filename.startswith("spectramind_results_")
    data = button.callback().read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert {"depths.csv", "qc.json", "config.yaml"} <= set(zf.namelist())
    # the profile was edited (nbins 37): the export says so and has its own run_dir
    assert state.tuned and state.export_filename.startswith("spectramind_nominal-tuned_")
    exported = yaml.safe_load(state.export_yaml())
    assert exported["run_dir"] == f"runs/nominal-tuned-{state.config_hash[:8]}"
    path = tmp_path / "tuned.yaml"
    path.write_text(state.export_yaml())
    assert config_hash(compose_config(str(path))) == state.config_hash
    fresh = AppState(data_root=state.data_root, work_dir=tmp_path)
    try:
        assert not fresh.tuned and fresh.export_filename.startswith("spectramind_nominal_")
        assert "runs/nominal-tuned" not in fresh.export_yaml()
    finally:
        fresh.close()


def test_summary_and_status_do_not_show_cached_timings_or_two_states(ran):
    state, view = ran
    view.summary.refresh()
    text = view.summary.pane.object
    assert "cached</span></td><td>0.00" not in text and "<th>last run</th>" in text
    assert state.set_key("calib.depths.fit.max_points", 400)
    tab = view.stage_tabs["depths"]
    tab.refresh_status()
    head = tab.header.object
    assert "chip-stale" in head and "chip-cached" not in head and "chip-ran" not in head
    assert "last run:" in head
    assert state.set_key("calib.depths.fit.max_points", 500)


def test_top_level_calib_explains_method_none(ran):
    state, view = ran
    view.tabs.active = list(view.stage_tabs).index("top_level_calib")
    text = " ".join(str(getattr(o, "object", "")) for box in view.stage_tabs["top_level_calib"].tables.objects
                    for o in box.objects)
    assert "method: none" in text and "passes its input through unchanged" in text


def test_points_style_and_gap_break_render():
    s = Series("r", [1.0, 2.0, np.nan, 4.0], [0.1, 0.2, np.nan, 0.3], style="points")
    element = render_element(s)
    assert type(element).__name__ == "Overlay" and type(element.get(0)).__name__ == "Scatter"
    assert plot_layout(s) != plot_layout(Series("r", [1.0], [0.1]))


def test_planets_tab_lists_a_batch_and_opens_a_planet(two_planet_batch, tmp_path):
    from spectramind_app.planets import PlanetsTab

    root, batch = two_planet_batch
    state = AppState(data_root=root, work_dir=tmp_path)
    try:
        view = AppView(state)
        tab = _tab(view, PlanetsTab)
        assert [t for t, _ in view.extra_tabs][-1] == "Planets"
        assert not tab.load("/etc") and "outside the allowed roots" in state.error
        assert not tab.load(str(root)) and "batch_summary.json: missing" in state.error
        assert tab.load(str(batch))
        assert list(tab.table.value["planet_id"]) == [3000001, 3000002]
        assert list(tab.table.value["status"]) == ["ok", "ok"]
        assert "2 planets (2 ok)" in tab.note.object
        assert tab.open(tab.rows[1])
        assert state.dataset == "train/3000002" and state.result.planet.planet_id == 3000002
        assert state.stale == [] and state.config_hash == state.result.config_hash
        assert view.active_stage == "depths"
        assert str(state.result.run_dir) == str(batch / "3000002")
        assert view.stage_tabs["depths"].plots.objects          # the batch run's diagnostics are shown
    finally:
        state.close()


def test_click_a_pixel_shows_its_series(demo_root, tmp_path):
    state = AppState(data_root=demo_root, work_dir=tmp_path)
    try:
        view = AppView(state)
        assert state.run() is not None, state.error
        view.tabs.active = list(view.stage_tabs).index("cds")
        inspector = view.stage_tabs["cds"].inspector
        # nominal keeps no frame plane: the inspector says how to keep them
        assert inspector.frame.object is None and "cache.write_intermediate" in inspector.note.object
        view.stage_tabs["cds"].form.widgets["cache.write_intermediate"].value = True
        assert state.run() is not None, state.error
        view.tabs.active = list(view.stage_tabs).index("adc")
        view.tabs.active = list(view.stage_tabs).index("cds")
        _inspect_pixels(inspector)
    finally:
        state.close()


def _inspect_pixels(inspector) -> None:
    assert inspector.frame.object is not None
    inspector._tap.event(x=200.5, y=16.5)
    assert "data-row='16' data-column='200'" in inspector.note.object
    assert len(inspector.series.objects) == 1
    inspector._tap.event(x=900.0, y=16.5)
    assert "outside the 32 x 356 detector" in inspector.note.object
