"""calib_core.runview: per-channel light curves, run snapshots, comparisons and the results zip of a run directory."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from omegaconf import open_dict

from calib_core import runview as rv
from calib_core.chain import run_chain
from calib_core.config import compose_config
from calib_core.config.compose import typed_content
from calib_core.io import list_planets, open_planet
from calib_core.stages.errors import DataError
from calib_core.store import load_output


def _cfg(root, **calib):
    cfg = compose_config("calib/nominal")
    with open_dict(cfg):
        cfg.data.root, cfg.data.split, cfg.data.planet_id = str(root), "train", list_planets(root, "train")[0]
    return cfg


@pytest.fixture(scope="module")
def run(demo_root, tmp_path_factory):
    """The nominal profile run on the small demo planet (with truth)."""
    result = run_chain(_cfg(demo_root), run_dir=tmp_path_factory.mktemp("runview") / "run")
    assert result.status == "ok"
    return result


def test_single_channel_curves_are_the_stage_outputs(run):
    """Raw = photometry flux, detrended = trace_flux_norm of the channel (read independently from the stores)."""
    for inst in ("AIRS-CH0", "FGS1"):
        trace = run.output("trace", inst)
        phot = run.output("photometry", inst)
        grid = np.asarray(trace.fields["channel_grid"]).reshape(-1)
        c = grid.size // 2
        lc = rv.light_curves(run.run_dir, inst, c)
        assert (lc.first, lc.last) == (c, c) and lc.wavelength_um[0] == pytest.approx(grid[c])
        norm = np.asarray(trace.fields["trace_flux_norm"], np.float64).reshape(-1, grid.size)[:, c]
        good = lc.good
        assert good.sum() > 0.8 * good.size
        np.testing.assert_allclose(lc.detrended[good], norm[good], rtol=1e-12)
        pflux = np.asarray(phot.fields["photometry_flux"], np.float64).reshape(-1, grid.size)
        pwl = np.asarray(phot.fields["channel_wavelength_um"], np.float64).reshape(-1)
        col = int(np.argmin(np.abs(pwl - grid[c])))
        np.testing.assert_allclose(lc.raw[good], pflux[good, col], rtol=1e-5)
        # the depth shown is the depths stage's row of that wavelength
        depths = run.output("depths")
        row = np.flatnonzero((np.asarray(depths.fields["wavelength_um"]) == grid[c])
                             & (np.asarray(depths.fields["instrument"]) == depths.meta["instruments"].index(inst)))
        assert lc.depth == pytest.approx(float(depths.fields["mu"][row[0]]))
        assert lc.phase.size == lc.time_h.size == lc.model.size


def test_model_and_residuals_are_consistent_with_the_noise_and_the_truth(run):
    """Residuals about the transit model scatter as the errors say; the band depth agrees with the truth."""
    grid, _, _ = rv.channel_grid(run.run_dir, "AIRS-CH0")
    lc = rv.light_curves(run.run_dir, "AIRS-CH0", 0, grid.size - 1)
    assert 0.3 < lc.residual_chi2_red < 2.0
    in_transit = lc.good & (lc.transit < 1.0)
    assert in_transit.sum() >= 5
    # no systematic offset in transit: the model carries the transit
    mean = np.mean(lc.residual[in_transit])
    assert abs(mean) < 4 * np.median(lc.err[in_transit]) / np.sqrt(in_transit.sum())
    # the model dips by about the depth (limb darkening makes the centre deeper than the mean depth)
    assert 0.8 * lc.depth < 1 - lc.transit.min() < 1.5 * lc.depth
    truth = np.asarray(run.planet.labels(), np.float64)
    depths = run.output("depths")
    airs = np.asarray(depths.fields["instrument"]) == depths.meta["instruments"].index("AIRS-CH0")
    # same weights as the band: inverse variance fixed per channel; compare the unweighted truth mean loosely
    assert abs(lc.depth - truth[airs].mean()) < 5 * lc.depth_err + 0.02 * truth[airs].mean()
    # folded curve: binned flux follows the folded model
    ok = np.isfinite(lc.fold_flux) & np.isfinite(lc.fold_err)
    z = (lc.fold_flux[ok] - lc.fold_model[ok]) / lc.fold_err[ok]
    assert np.mean(z * z) < 3.0


def test_range_of_one_channel_equals_the_channel_and_plots_are_typed(run):
    a = rv.light_curves(run.run_dir, "AIRS-CH0", 10)
    b = rv.light_curves(run.run_dir, "AIRS-CH0", 10, 10)
    np.testing.assert_array_equal(a.residual, b.residual)
    wide = rv.light_curves(run.run_dir, "AIRS-CH0", 10, 29)
    assert wide.label.startswith("AIRS-CH0 channels 10-29")
    assert np.nanmedian(wide.err) < np.nanmedian(a.err) / 3       # 20 channels averaged: ~sqrt(20) less noise
    plots = rv.lightcurve_plots(wide)
    assert [p.style for p in plots] == ["points"] * 4
    assert plots[2].xlabel.startswith("phase")


def test_bad_inputs_are_named(run, tmp_path):
    with pytest.raises(DataError, match="channels 999..999 outside 0..281"):
        rv.light_curves(run.run_dir, "AIRS-CH0", 999)
    with pytest.raises(DataError, match="channels 5..3"):
        rv.light_curves(run.run_dir, "AIRS-CH0", 5, 3)
    with pytest.raises(DataError, match="qc.json: missing"):
        rv.light_curves(tmp_path, "AIRS-CH0", 0)
    (tmp_path / "qc.json").write_text("{not json")
    with pytest.raises(DataError, match="qc.json: unreadable"):
        rv.read_qc(tmp_path)
    # a qc.json naming an output outside its run directory is refused
    qc = json.loads((run.run_dir / "qc.json").read_text())
    qc["stages"]["depths"]["planet"]["output_dir"] = "/etc"
    (tmp_path / "qc.json").write_text(json.dumps(qc))
    with pytest.raises(DataError, match="output directory /etc lies outside"):
        rv.load_stage_output(tmp_path, "depths", None)
    with pytest.raises(DataError, match="no top_level_calib output for AIRS-CH0"):
        rv.load_stage_output(run.run_dir, "top_level_calib", "AIRS-CH0")
    with pytest.raises(DataError, match="no channel near"):
        rv.nearest_channel(np.array([]), 1.0)
    assert rv.nearest_channel(np.array([1.0, 2.0, 3.0]), 2.4) == 1
    grid, _, _ = rv.channel_grid(run.run_dir, "AIRS-CH0")
    assert rv.channel_at(run.run_dir, float(grid[57]) + 1e-5) == ("AIRS-CH0", 57)
    assert rv.channel_at(run.run_dir, 0.71) == ("FGS1", 0)
    with pytest.raises(DataError, match="no channel near nan"):
        rv.channel_at(run.run_dir, float("nan"))


def test_snapshots_diff_and_compare(run, demo_root, tmp_path):
    snap = rv.read_run(run.run_dir, "A")
    assert snap.status == "ok" and snap.mu.size == 283 and snap.gates
    same = rv.snapshot_result(run, run.validated.cfg, "A'")
    np.testing.assert_array_equal(same.mu, snap.mu)
    assert same.config_hash == snap.config_hash and rv.config_diff(snap.config, same.config) == []
    assert {(g["stage"], g["name"]) for g in same.gates} == {(g["stage"], g["name"]) for g in snap.gates}
    d = rv.compare_spectra(snap, same)
    assert np.all(d.z == 0) and d.max_abs_z == 0
    # exactly one key differs
    cfg = _cfg(demo_root)
    with open_dict(cfg):
        cfg.calib.phase.binning.nbins = 37
    diff = rv.config_diff(snap.config, typed_content(cfg))
    assert diff == [("calib.phase.binning.nbins", run.validated.cfg.calib.phase.binning.nbins, 37)]
    # a different spectrum: z = (b - a) / hypot(sa, sb), checked against a direct computation
    other = rv.RunSnapshot("B", "ok", snap.config, "x", [], snap.wavelength_um, snap.mu + snap.sigma,
                           snap.sigma, snap.instrument, snap.instruments, {})
    np.testing.assert_allclose(rv.compare_spectra(snap, other).z, 1 / np.sqrt(2))
    short = rv.RunSnapshot("C", "ok", snap.config, "x", [], snap.wavelength_um[:5], snap.mu[:5], snap.sigma[:5],
                           snap.instrument[:5], snap.instruments, {})
    with pytest.raises(DataError, match="different wavelength grids"):
        rv.compare_spectra(snap, short)
    failed = rv.RunSnapshot("D", "failed", snap.config, "x", [], np.empty(0), np.empty(0), np.empty(0),
                            np.empty(0, np.int16), [], {})
    with pytest.raises(DataError, match="run D: no spectrum"):
        rv.compare_spectra(snap, failed)
    # white-light fits overlaid: the depths stage's curves and models, both white depths in the title
    depths = run.output("depths")
    plots = rv.white_light_overlays(snap, same)
    assert len(plots) == len(depths.meta["white_instruments"]) >= 1
    n = depths.meta["white_instruments"].index(snap.metrics["white_instrument"])
    plot = plots[n]
    model = np.asarray(depths.fields["white_model"][n], np.float64)
    np.testing.assert_allclose(plot.overlay[2].y, model[np.isfinite(model)])
    assert f"A {snap.metrics['white_depth'] * 1e6:.0f} ppm" in plot.title
    assert rv.white_light_overlays(snap, failed) == []
    rows = rv.gates_side_by_side(snap, failed)
    assert len(rows) == len(snap.gates) and all(r["b"] is None for r in rows)


def test_results_zip_holds_the_run_files(run, tmp_path):
    data = rv.results_zip(run.run_dir)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        assert {"depths.csv", "qc.json", "config.yaml"} <= names
        assert zf.read("depths.csv") == (run.run_dir / "depths.csv").read_bytes()
        assert json.loads(zf.read("qc.json"))["status"] == "ok"
    (tmp_path / "qc.json").write_text("{}")
    with pytest.raises(DataError, match="no depths.csv, config.yaml"):
        rv.results_zip(tmp_path)


def test_stage_arrays_zip_holds_the_output_and_names_what_it_skips(run):
    out_dir = run.record("photometry", "AIRS-CH0").output_dir
    data, skipped = rv.stage_arrays_zip(run.run_dir, "photometry", "AIRS-CH0")
    assert skipped == []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        meta = json.loads(zf.read("meta.json"))
        assert meta["stage"] == "photometry" and meta["instrument"] == "AIRS-CH0"
        assert set(zf.namelist()) == {"meta.json", "checksums.json", *(f"{f}.npy" for f in meta["fields"])}
        flux = np.load(io.BytesIO(zf.read("photometry_flux.npy")))
    np.testing.assert_array_equal(flux, np.load(f"{out_dir}/photometry_flux.npy"))
    # over the limit: the largest fields stay out, each named with its path; nothing silently dropped
    sizes = {p.stem: p.stat().st_size for p in Path(out_dir).glob("*.npy")}
    limit = sum(sizes.values()) - max(sizes.values())
    data, skipped = rv.stage_arrays_zip(run.run_dir, "photometry", "AIRS-CH0", max_bytes=limit)
    assert len(skipped) == 1 and sizes[skipped[0]] == max(sizes.values())
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        note = zf.read("SKIPPED.txt").decode()
        assert f"{skipped[0]}.npy" in note and f"{out_dir}/{skipped[0]}.npy" in note
        assert f"{skipped[0]}.npy" not in zf.namelist() and len(zf.namelist()) == len(sizes) + 2
    with pytest.raises(DataError, match=r"no photometry output for AIRS-CH1 \(stage disabled, skipped or failed"):
        rv.stage_arrays_zip(run.run_dir, "photometry", "AIRS-CH1")


def test_stage_arrays_zip_refuses_a_corrupted_output_naming_the_file(demo_root, tmp_path):
    result = run_chain(compose_config("calib/fast", [f"data.root={demo_root}", f"run_dir={tmp_path / 'run'}"]))
    path = f"{result.record('trace', 'FGS1').output_dir}/trace_flux_norm.npy"
    arr = np.load(path, mmap_mode="r+")
    arr[0] += 1.0
    arr.flush()
    del arr
    with pytest.raises(DataError, match=r"trace_flux_norm\.npy: content differs from its checksum"):
        rv.stage_arrays_zip(result.run_dir, "trace", "FGS1")
    # a meta.json (with matching checksums) naming a field outside its directory: not an output, nothing read
    from calib_core.store import file_digest

    out_dir = Path(result.record("phase", "FGS1").output_dir)
    meta = json.loads((out_dir / "meta.json").read_text())
    meta["fields"]["../../../../qc"] = {"shape": [1], "dtype": "float64", "unit": ""}
    (out_dir / "meta.json").write_text(json.dumps(meta))
    sums = json.loads((out_dir / "checksums.json").read_text())
    sums["meta.json"] = file_digest(out_dir / "meta.json")
    sums["../../../../qc.npy"] = "0"
    (out_dir / "checksums.json").write_text(json.dumps(sums))
    with pytest.raises(DataError, match=r"phase/FGS1 output missing or incomplete"):
        rv.stage_arrays_zip(result.run_dir, "phase", "FGS1")
    assert load_output(out_dir) is None                 # the store reads nothing named outside its directory


def test_a_saved_run_reads_back_from_its_new_place(run, tmp_path):
    root = tmp_path / "data"
    saved = rv.save_run(run.run_dir, root, "tuned/first")
    assert saved == (root / "runs" / "tuned" / "first").resolve() and not (saved / ".lock").exists()
    assert (saved / "depths.csv").read_bytes() == (run.run_dir / "depths.csv").read_bytes()
    again = rv.load_result(saved)
    dirs = [r.output_dir for r in again.records if r.output_dir]
    assert dirs and all(str(saved) in d for d in dirs)          # outputs found under the saved copy
    curves = rv.light_curves(saved, "AIRS-CH0", 100)
    np.testing.assert_array_equal(curves.raw, rv.light_curves(run.run_dir, "AIRS-CH0", 100).raw)
    assert not list(saved.parent.glob(".*.tmp"))
    for bad in ("../escape", "/etc", "", "a/../../b", ".hidden", "a b"):
        with pytest.raises(DataError, match=r"save run as .*: expected a folder name under "):
            rv.save_run(run.run_dir, root, bad)
    with pytest.raises(DataError, match=r"first exists; choose another name"):
        rv.save_run(run.run_dir, root, "tuned/first")
    with pytest.raises(DataError, match=r"run_state.json: missing \(not a finished run directory\)"):
        rv.save_run(tmp_path / "nothing", root, "other")


def test_adc_histogram_spans_the_data_not_the_adc_range(detector_chain):
    """The histogram covers the central 99.8 % of the sampled raw values; the pile-ups are counted in the title."""
    from calib_core.stages.adc import step as adc_step

    m = detector_chain["metrics"][("adc", "AIRS-CH0")]
    hist = adc_step.STAGE.diagnostics(detector_chain["outputs"][("adc", "AIRS-CH0")], m, None)[0]
    edges, counts = np.asarray(hist.edges), np.asarray(hist.counts)
    full_edges, full = np.asarray(m["hist_edges"]), np.asarray(m["hist_counts"])
    assert edges[-1] - edges[0] < 0.5 * (full_edges[-1] - full_edges[0])
    # oracle: the coarse full-range histogram (independent binning) holds the same reads inside the range
    inner = full.sum() - full[0] - full[-1]
    assert counts.sum() >= 0.997 * inner - 0.01 * full.sum()
    assert f"{m['n_adc_floor']} reads at 0 DN" in hist.title and "saturated" in hist.title
    assert adc_step._robust_histogram(np.zeros(1 << 16, np.int64), 64) == {}


def test_cds_diagnostics_in_hours_with_the_gap_deviation(detector_chain):
    from calib_core.stages.cds import step as cds_step

    out = detector_chain["outputs"][("cds", "AIRS-CH0")]
    m = detector_chain["metrics"][("cds", "AIRS-CH0")]
    flux, gap = cds_step.STAGE.diagnostics(out, m, None)[:2]
    assert flux.xlabel == gap.xlabel == "time since visit start (h)"
    time_s = np.asarray(out.fields["frame_time_s"])
    dt = np.asarray(out.fields["pair_dt_s"])
    live = np.isfinite(dt)
    np.testing.assert_allclose(np.asarray(gap.x), time_s[live] / 3600.0)
    assert gap.title.startswith(f"Pair time gap minus nominal {np.median(dt[live]):.6g} s")
    assert np.all(np.abs(gap.y) <= np.abs(dt[live] - np.median(dt[live])).max() * 1e3 + 5e-4)
    assert gap.style == "points"


def test_cds_flux_marks_unpaired_and_outlier_frames_on_the_time_axis(detector_chain):
    from calib_core.stages.cds import step as cds_step

    out = detector_chain["outputs"][("cds", "AIRS-CH0")]
    m = dict(detector_chain["metrics"][("cds", "AIRS-CH0")])
    hits = np.asarray(out.fields["frame_cosmic_rays"])
    assert hits.sum() == m["n_cosmic_rays"] == np.asarray(out.fields["cosmic_ray_count"]).sum()
    dq = np.asarray(out.frames().dq)
    from calib_core.dq import DQ

    np.testing.assert_array_equal(hits, np.count_nonzero(dq & int(DQ.COSMIC_RAY), axis=(1, 2)))
    m.update(unpaired_frames=[2, 9], outlier_frames=[5])
    flux = cds_step.STAGE.diagnostics(out, m, None)[0]
    time_h = np.asarray(out.fields["frame_time_s"]) / 3600.0
    frame_flux = np.asarray(out.fields["frame_flux"], np.float64)
    unpaired, outlier, *cosmic = flux.overlay
    assert (unpaired.label, outlier.label) == ("unpaired or dropped (2)", "outlier frame (1)")
    if hits.any():
        (cr,) = cosmic
        assert cr.label == f"cosmic-ray hits ({np.count_nonzero(hits)} frames, {hits.sum()} pixels)"
        np.testing.assert_allclose(cr.x, time_h[hits > 0])
    np.testing.assert_allclose(unpaired.x, time_h[[2, 9]])
    np.testing.assert_allclose(outlier.x, time_h[[5]])
    assert outlier.y[0] == (frame_flux[5] if np.isfinite(frame_flux[5]) else np.nanmin(flux.y))
    assert unpaired.style == outlier.style == "points"


def test_read_batch_and_reopen_a_planet(two_planet_batch, tmp_path):
    root, batch = two_planet_batch
    rows = rv.read_batch(batch)
    assert [r["planet_id"] for r in rows] == [3000001, 3000002]
    summary = json.loads((batch / "batch_summary.json").read_text())
    for row, p in zip(rows, summary["planets"]):
        qc = json.loads((batch / str(row["planet_id"]) / "qc.json").read_text())
        depths = qc["stages"]["depths"]["planet"]["metrics"]
        assert row["status"] == "ok" and row["white_depth_ppm"] == pytest.approx(depths["white_depth"] * 1e6)
        assert row["chi2_red_median"] == pytest.approx(depths["chi2_red_median"])
        # with labels: the white depth's z against the truth is an honest number of sigma
        assert abs(row["z_white"]) < 5
        passed, total = map(int, row["gates"].split("/"))
        assert total == sum(len(r["gates"]) for per in qc["stages"].values() for r in per.values())
        assert passed == total - (len(row["gates_failed"].split(", ")) if row["gates_failed"] else 0)
    # the 2025 score of each planet: the metric written out (ariel_data.md 3.1), naive model of the batch's labels
    truths = {pid: open_planet(root, pid).labels() for pid in (3000001, 3000002)}
    y_all = np.stack(list(truths.values()))
    for row in rows:
        with open(batch / str(row["planet_id"]) / "depths.csv") as fh:
            values = np.array(list(csv.reader(fh))[1][1:], float)
        mu, sigma, y = values[:283], values[283:], truths[row["planet_id"]]

        def gll(m, s):
            return -0.5 * np.log(2 * np.pi) - np.log(s) - 0.5 * ((y - m) / s) ** 2

        sig_true = np.r_[1e-6, np.full(282, 1e-5)]
        s_ij = (gll(mu, sigma) - gll(y_all.mean(), y_all.std())) / (gll(y, sig_true) - gll(y_all.mean(), y_all.std()))
        w = np.r_[57.846, np.ones(282)]
        assert row["score_2025"] == pytest.approx(np.clip(np.sum(w * s_ij) / w.sum(), 0, 1), rel=1e-9)
        assert 0 < row["score_2025"] <= 1
    result = rv.load_result(rows[1]["run_dir"])
    assert result.status == "ok" and result.planet.planet_id == 3000002
    assert result.config_hash == summary["planets"][1]["config_hash"]
    # the batch pruned the detector frame planes (keep: series): those outputs are listed without a directory
    adc = result.record("adc", "AIRS-CH0")
    assert adc.output_dir is None and "not kept" in adc.reason
    assert result.diagnostics("depths") and result.diagnostics("trace", "AIRS-CH0")
    lc = rv.light_curves(rows[1]["run_dir"], "AIRS-CH0", 100)
    assert lc.good.any()
    # bad inputs
    with pytest.raises(DataError, match="batch_summary.json: missing"):
        rv.read_batch(tmp_path)
    (tmp_path / "batch_summary.json").write_text(json.dumps({"planets": [{"planet_id": 1, "run_dir": "/etc"}]}))
    with pytest.raises(DataError, match="planet run directory /etc lies outside"):
        rv.read_batch(tmp_path)
    (tmp_path / "batch_summary.json").write_text("[]")
    with pytest.raises(DataError, match="no 'planets' list"):
        rv.read_batch(tmp_path)


def test_pixel_series_and_its_dq_flags(demo_root, tmp_path):
    cfg = _cfg(demo_root)
    cfg.calib.cds.cache.write_intermediate = True            # keep CDS's frame planes (nominal releases them)
    run = run_chain(cfg, run_dir=tmp_path / "run")
    out = run.output("cds", "AIRS-CH0")
    data, dq = np.asarray(out.fields["data"]), np.asarray(out.fields["dq"])
    # a pixel with a DQ bit set somewhere (the demo has cosmic rays and hot pixels), else the trace centre
    hits = np.argwhere(dq.any(axis=0))
    r, c = map(int, hits[0]) if hits.size else (16, 200)
    px = rv.pixel_series(out, r, c)
    np.testing.assert_array_equal(px.value, data[:, r, c].astype(np.float64))
    np.testing.assert_allclose(px.time_h, np.asarray(out.fields["frame_time_s"]) / 3600.0)
    from calib_core.dq import DQ

    for name, idx in px.flags.items():
        np.testing.assert_array_equal(idx, np.flatnonzero(dq[:, r, c] & int(DQ[name])))
    assert sum(len(i) for i in px.flags.values()) >= np.count_nonzero(dq[:, r, c])
    (plot,) = px.plots()
    assert [o.label for o in plot.overlay] == list(px.flags) and plot.style == "points"
    assert rv.pixel_at(200.7, 16.2) == (16, 200)
    with pytest.raises(DataError, match=r"pixel \(99, 0\) outside the 32 x 356 detector"):
        rv.pixel_series(out, 99, 0)
    phot = run.output("photometry", "AIRS-CH0")
    with pytest.raises(DataError, match="no frame planes stored"):
        rv.pixel_series(phot, 0, 0)
    flat = run.output("flat", "AIRS-CH0")                    # streamed under nominal: metrics and a preview only
    with pytest.raises(DataError, match="no frame planes stored"):
        rv.pixel_series(flat, 0, 0)
    # a time on the series -> the nearest frame
    times = px.time_h
    for k in (0, 7, len(times) - 1):
        assert rv.frame_at(out, times[k]) == k
        assert rv.frame_at(out, times[k] + 0.3 * (times[1] - times[0])) == k
    assert rv.frame_at(out, -5.0) == 0 and rv.frame_at(out, 1e3) == len(times) - 1
    with pytest.raises(DataError, match="no frame planes stored"):
        rv.frame_at(flat, 1.0)
    with pytest.raises(DataError, match=r"time nan: expected hours since the visit start"):
        rv.frame_at(out, float("nan"))
