"""Reader tests: round trip of the demo planet, 2024 names, streaming, and every layout error."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calib_core.io import AIRS_CROP, FRAME_SHAPE, INSTRUMENTS, DataLayoutError, list_planets, open_planet
from calib_core.sim import DEMO_PLANET_ID, load_truth, make_demo

N_PAIRS = {"AIRS-CH0": 40, "FGS1": 60}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("demo") / "data", seed=1, n_pairs=N_PAIRS)


@pytest.fixture()
def demo_copy(demo_root, tmp_path) -> Path:
    """A private copy of the demo dataset that a test may break."""
    return Path(shutil.copytree(demo_root, tmp_path / "copy"))


def _rewrite_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


# ---------------------------------------------------------------------------
# round trip
# ---------------------------------------------------------------------------


def test_open_planet_and_shapes(demo_root):
    assert list_planets(demo_root) == [DEMO_PLANET_ID]
    planet = open_planet(demo_root)
    assert (planet.planet_id, planet.split, planet.visit, planet.year) == (DEMO_PLANET_ID, "train", 0, 2025)
    assert open_planet(demo_root, planet_id=DEMO_PLANET_ID) == planet
    for inst in INSTRUMENTS:
        n = 2 * N_PAIRS[inst]
        assert planet.n_frames(inst) == n
        frames = planet.read_frames(inst)
        assert frames.shape == (n, *FRAME_SHAPE[inst])
        assert frames.dtype == np.uint16
        assert planet.signal_path(inst).name == f"{inst}_signal_0.parquet"


@pytest.mark.parametrize("instrument, chunk", [("FGS1", 1), ("FGS1", 7), ("FGS1", 16), ("AIRS-CH0", 1000)])
def test_iter_frames_chunks_match_whole_read(demo_root, instrument, chunk):
    planet = open_planet(demo_root)
    whole = planet.read_frames(instrument)
    chunks = list(planet.iter_frames(instrument, chunk_frames=chunk))
    assert [first for first, _ in chunks] == list(range(0, len(whole), chunk))
    assert all(len(c) == chunk for _, c in chunks[:-1])
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), whole)
    sub = list(planet.iter_frames(instrument, chunk_frames=chunk, start=5, stop=23))
    assert sub[0][0] == 5
    np.testing.assert_array_equal(np.concatenate([c for _, c in sub]), whole[5:23])
    np.testing.assert_array_equal(planet.read_frames(instrument, start=5, stop=23), whole[5:23])


def test_iter_frames_rejects_bad_ranges(demo_root):
    planet = open_planet(demo_root)
    with pytest.raises(ValueError, match="frame range"):
        next(planet.iter_frames("FGS1", start=10, stop=5))
    with pytest.raises(ValueError, match="frame range"):
        planet.read_frames("FGS1", stop=10**6)
    with pytest.raises(ValueError, match="unknown instrument"):
        planet.signal_path("NIRSpec")


def test_axis_semantics_and_wavelength_order(demo_root):
    planet = open_planet(demo_root)
    airs = planet.axis("AIRS-CH0")
    n = 2 * N_PAIRS["AIRS-CH0"]
    assert airs.time_s.shape == airs.exptime_s.shape == airs.read_kind.shape == (n,)
    assert airs.time_s.dtype == airs.exptime_s.dtype == np.float64 and airs.read_kind.dtype == np.int8
    np.testing.assert_allclose(airs.time_s[1::2] - airs.time_s[0::2], 0.1, atol=1e-9)
    np.testing.assert_allclose(np.diff(airs.time_s[0::2]), 27000.0 / N_PAIRS["AIRS-CH0"], atol=1e-8)
    np.testing.assert_allclose(airs.exptime_s, np.tile([0.1, 4.6], n // 2), atol=1e-12)
    np.testing.assert_array_equal(airs.read_kind, np.tile([0, 1], n // 2))
    fgs = planet.axis("FGS1")
    assert fgs.wavelength_um is None and fgs.time_s.size == 2 * N_PAIRS["FGS1"]
    np.testing.assert_allclose(fgs.exptime_s, np.tile([0.1, 0.2], N_PAIRS["FGS1"]), atol=1e-12)
    np.testing.assert_allclose(np.diff(fgs.time_s[0::2]), 27000.0 / N_PAIRS["FGS1"], atol=1e-8)

    wl_axis = airs.wavelength_um
    assert wl_axis.shape == (356,) and np.all(np.diff(wl_axis) < 0)
    assert wl_axis[0] == 4.078463 and wl_axis[-1] == 1.633253
    targets = planet.wavelengths()
    assert targets.shape == (283,) and targets[0] == 0.7
    lo, hi = AIRS_CROP
    np.testing.assert_array_equal(wl_axis[lo:hi][::-1], targets[1:])
    assert targets[1] == 1.951761 and targets[-1] == 3.895036


def test_calibration_maps(demo_root):
    planet = open_planet(demo_root)
    truth = load_truth(demo_root, DEMO_PLANET_ID)
    for inst in INSTRUMENTS:
        cal = planet.calibration(inst)
        shape = FRAME_SHAPE[inst]
        for name in ("dark", "flat", "read"):
            arr = getattr(cal, name)
            assert arr.shape == shape and arr.dtype == np.float64
        assert cal.dead.shape == shape and cal.dead.dtype == bool
        assert cal.linear_corr.shape == (6, *shape) and cal.linear_corr.dtype == np.float64
        assert set(cal.paths) == {"dark", "dead", "flat", "read", "linear_corr"}
        assert all(Path(p).is_file() for p in cal.paths.values())
        np.testing.assert_array_equal(cal.dark, truth[f"{inst}_dark"])
        np.testing.assert_array_equal(cal.dead, truth[f"{inst}_dead"])
        live = ~cal.dead
        np.testing.assert_array_equal(cal.flat[live], truth[f"{inst}_flat"][live])
        assert np.all((cal.flat[cal.dead] >= -0.05) & (cal.flat[cal.dead] <= 0.0))
        # row k*H + r of linear_corr.parquet is the coefficient of x**k for detector row r
        table = pq.read_table(cal.paths["linear_corr"])
        assert table.num_rows == 6 * shape[0] and table.column_names[0] == "column_0"
        assert table.column(3)[2 * shape[0] + 5].as_py() == cal.linear_corr[2, 5, 3]
        np.testing.assert_allclose(np.median(cal.linear_corr[2]), -6.2e-9, rtol=0.05)


def test_adc_star_info_labels_metadata(demo_root):
    planet = open_planet(demo_root)
    for inst in INSTRUMENTS:
        assert planet.adc(inst) == (0.4369, -1000.0)
    star = planet.star_info()
    assert set(star) == {"Rs", "Ms", "Ts", "Mp", "e", "P", "sma", "i"}
    truth = load_truth(demo_root, DEMO_PLANET_ID)
    assert star["P"] == truth["period_d"] and star["sma"] == truth["a_rs"] and star["i"] == truth["inc_deg"]
    labels = planet.labels()
    assert labels.shape == (283,)
    np.testing.assert_array_equal(labels, truth["depth"])
    meta = planet.metadata_paths()
    assert set(meta) == {"axis_info", "adc_info", "wavelengths", "star_info", "labels"}
    assert all(Path(p).is_file() for p in meta.values())


def test_test_split_has_no_labels(tmp_path):
    root = make_demo(tmp_path / "t", seed=2, n_pairs=4, split="test", planet_id=42)
    planet = open_planet(root, split="test")
    assert planet.planet_id == 42
    assert planet.labels() is None
    assert planet.star_info() is not None
    assert not (root / "train.csv").exists()


# ---------------------------------------------------------------------------
# other layouts
# ---------------------------------------------------------------------------


def test_2024_layout(demo_root, tmp_path):
    root = tmp_path / "adc2024"
    src_planet = demo_root / "train" / str(DEMO_PLANET_ID)
    dst_planet = root / "train" / str(DEMO_PLANET_ID)
    dst_planet.mkdir(parents=True)
    for inst in INSTRUMENTS:
        shutil.copy(src_planet / f"{inst}_signal_0.parquet", dst_planet / f"{inst}_signal.parquet")
        shutil.copytree(src_planet / f"{inst}_calibration_0", dst_planet / f"{inst}_calibration")
    shutil.copy(demo_root / "train.csv", root / "train_labels.csv")
    shutil.copy(demo_root / "wavelengths.csv", root / "wavelengths.csv")
    shutil.copy(demo_root / "axis_info.parquet", root / "axis_info.parquet")
    _rewrite_csv(root / "train_adc_info.csv",
                 ["planet_id", "FGS1_adc_offset", "FGS1_adc_gain", "AIRS-CH0_adc_offset", "AIRS-CH0_adc_gain",
                  "star"],
                 [[7, -1.0, 1.0, -1.0, 1.0, 0], [DEMO_PLANET_ID, -900.0, 0.5, -950.0, 0.45, 1]])

    planet = open_planet(root)
    reference = open_planet(demo_root)
    assert planet.year == 2024
    assert planet.signal_path("FGS1").name == "FGS1_signal.parquet"
    assert planet.adc("FGS1") == (0.5, -900.0)
    assert planet.adc("AIRS-CH0") == (0.45, -950.0)
    assert planet.star_info() is None
    np.testing.assert_array_equal(planet.labels(), reference.labels())
    np.testing.assert_array_equal(planet.read_frames("AIRS-CH0"), reference.read_frames("AIRS-CH0"))
    np.testing.assert_array_equal(planet.calibration("FGS1").flat, reference.calibration("FGS1").flat)
    np.testing.assert_array_equal(planet.axis("AIRS-CH0").time_s, reference.axis("AIRS-CH0").time_s)
    assert set(planet.metadata_paths()) == {"axis_info", "adc_info", "wavelengths", "labels"}
    with pytest.raises(DataLayoutError, match="no signal file for visit 1"):
        open_planet(root, visit=1)


def test_single_column_layout_and_odd_row_groups(demo_copy):
    """One-column tables (n*H*W rows) and row groups that split frames are re-chunked exactly."""
    planet = open_planet(demo_copy)
    frames = planet.read_frames("FGS1")
    path = planet.signal_path("FGS1")
    pq.write_table(pa.table({"0": frames.reshape(-1)}), path, row_group_size=3000)
    assert planet.n_frames("FGS1") == len(frames)
    np.testing.assert_array_equal(planet.read_frames("FGS1"), frames)
    got = list(planet.iter_frames("FGS1", chunk_frames=10, start=3, stop=57))
    np.testing.assert_array_equal(np.concatenate([c for _, c in got]), frames[3:57])
    assert [f for f, _ in got] == [3, 13, 23, 33, 43, 53]


def test_other_integer_dtype_is_cast(demo_copy):
    planet = open_planet(demo_copy)
    frames = planet.read_frames("FGS1")
    wide = frames.reshape(len(frames), -1).astype(np.int32)
    pq.write_table(pa.table({str(j): wide[:, j] for j in range(wide.shape[1])}), planet.signal_path("FGS1"),
                   row_group_size=7)
    got = planet.read_frames("FGS1")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, frames)
    wide[4, 9] = 70000
    pq.write_table(pa.table({str(j): wide[:, j] for j in range(wide.shape[1])}), planet.signal_path("FGS1"))
    with pytest.raises(DataLayoutError, match=str(planet.signal_path("FGS1"))):
        planet.read_frames("FGS1")


# ---------------------------------------------------------------------------
# layout errors: every message names the file and what was expected
# ---------------------------------------------------------------------------


def test_error_missing_root_and_split(tmp_path, demo_root):
    missing = tmp_path / "nope"
    with pytest.raises(DataLayoutError, match=f"dataset root not found.*{missing}"):
        open_planet(missing)
    with pytest.raises(DataLayoutError, match=f"split directory not found.*{demo_root / 'test'}"):
        open_planet(demo_root, split="test")


def test_error_unknown_planet_lists_ids(demo_root):
    with pytest.raises(DataLayoutError, match=f"planet 123 not found.*1 available: {DEMO_PLANET_ID}"):
        open_planet(demo_root, planet_id=123)


def test_error_empty_split_and_missing_signal_dir(tmp_path):
    (tmp_path / "train" / "77").mkdir(parents=True)
    with pytest.raises(DataLayoutError, match=f"no signal file for visit 0 in {tmp_path / 'train' / '77'}"):
        open_planet(tmp_path)
    shutil.rmtree(tmp_path / "train" / "77")
    with pytest.raises(DataLayoutError, match="no planet directories"):
        open_planet(tmp_path)


def test_error_missing_signal_file(demo_copy):
    planet = open_planet(demo_copy)
    path = planet.signal_path("FGS1")
    path.unlink()
    with pytest.raises(DataLayoutError, match=f"FGS1 signal file not found: expected file {path}"):
        planet.n_frames("FGS1")
    with pytest.raises(DataLayoutError, match=str(path)):
        planet.axis("FGS1")


def test_error_missing_calibration(demo_copy):
    planet = open_planet(demo_copy)
    flat = planet.calibration_dir("AIRS-CH0") / "flat.parquet"
    flat.unlink()
    with pytest.raises(DataLayoutError, match=f"AIRS-CH0 flat map not found: expected file {flat}"):
        planet.calibration("AIRS-CH0")
    shutil.rmtree(planet.calibration_dir("FGS1"))
    with pytest.raises(DataLayoutError, match=f"expected directory {planet.calibration_dir('FGS1')}"):
        planet.calibration("FGS1")


@pytest.mark.parametrize("name, values, expected", [
    ("dark", np.zeros((31, 32)), "expected 32 rows x 32 columns, found 31 x 32"),
    ("linear_corr", np.zeros((32, 32)), "expected 192 rows x 32 columns, found 32 x 32"),
    ("dead", np.zeros((32, 32)), "expected bool columns"),
    ("flat", np.full((32, 32), "x"), "expected numeric"),
])
def test_error_calibration_content(demo_copy, name, values, expected):
    planet = open_planet(demo_copy)
    path = planet.calibration_dir("FGS1") / f"{name}.parquet"
    pq.write_table(pa.table({f"column_{j}": values[:, j] for j in range(values.shape[1])}), path)
    with pytest.raises(DataLayoutError, match=f"{path}: {expected}"):
        planet.calibration("FGS1")


def test_error_wrong_column_count_and_dtype(demo_copy):
    planet = open_planet(demo_copy)
    path = planet.signal_path("AIRS-CH0")
    pq.write_table(pa.table({str(j): np.zeros(4, np.uint16) for j in range(100)}), path)
    with pytest.raises(DataLayoutError, match=f"{path}: expected 11392 columns.*found 100 columns x 4 rows"):
        planet.n_frames("AIRS-CH0")
    path = planet.signal_path("FGS1")
    pq.write_table(pa.table({str(j): np.zeros(4) for j in range(1024)}), path)
    with pytest.raises(DataLayoutError, match=rf"{path}: signal columns must be integer.*\['double'\]"):
        next(planet.iter_frames("FGS1"))


def test_error_axis_info(demo_copy):
    planet = open_planet(demo_copy)
    path = demo_copy / "axis_info.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["AIRS-CH0-integration_time"]), path)
    with pytest.raises(DataLayoutError, match=f"{path}: expected column 'AIRS-CH0-integration_time'"):
        planet.axis("AIRS-CH0")
    pq.write_table(table.slice(0, 50), path)
    with pytest.raises(DataLayoutError, match=f"{path}: column 'FGS1-axis0-h' has 50 non-NaN rows, "
                                              f"expected at least n_frames = 120"):
        planet.axis("FGS1")
    path.unlink()
    with pytest.raises(DataLayoutError, match=f"axis_info not found: expected file {path}"):
        planet.axis("FGS1")


def test_error_adc_info(demo_copy):
    planet = open_planet(demo_copy)
    path = demo_copy / "adc_info.csv"
    header, rows = _read_csv(path)
    keep = [i for i, h in enumerate(header) if h != "AIRS-CH0_adc_gain"]
    _rewrite_csv(path, [header[i] for i in keep], [[r[i] for i in keep] for r in rows])
    assert planet.adc("FGS1") == (0.4369, -1000.0)
    with pytest.raises(DataLayoutError, match=f"{path}: expected column 'AIRS-CH0_adc_gain'"):
        planet.adc("AIRS-CH0")
    path.unlink()
    with pytest.raises(DataLayoutError, match=f"ADC info not found: expected {path}"):
        planet.adc("FGS1")


def test_error_labels_and_wavelengths(demo_copy):
    planet = open_planet(demo_copy)
    path = demo_copy / "wavelengths.csv"
    header, rows = _read_csv(path)
    _rewrite_csv(path, header[:-1], [rows[0][:-1]])
    with pytest.raises(DataLayoutError, match=f"{path}: expected column 'wl_283'"):
        planet.wavelengths()
    path.unlink()
    with pytest.raises(DataLayoutError, match=f"wavelengths not found: expected file {path}"):
        planet.wavelengths()
    labels = demo_copy / "train.csv"
    header, rows = _read_csv(labels)
    rows[0][0] = "999"
    _rewrite_csv(labels, header, rows)
    assert planet.labels() is None


def test_a_rewritten_signal_file_is_read_with_its_new_footer(demo_copy):
    """The parsed footer is shared by validation, layout and reader, and parsed again once the file changes."""
    from calib_core.io.parquet_frames import file_metadata

    planet = open_planet(demo_copy)
    frames = planet.read_frames("FGS1")
    path = planet.signal_path("FGS1")
    assert file_metadata(path) is file_metadata(path)
    wide = frames[:40].reshape(40, -1)
    pq.write_table(pa.table({str(j): wide[:, j] for j in range(wide.shape[1])}), path, row_group_size=9)
    assert file_metadata(path).num_rows == 40 and planet.n_frames("FGS1") == 40
    np.testing.assert_array_equal(planet.read_frames("FGS1"), frames[:40])
