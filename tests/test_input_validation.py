"""Issue 11 (run integrity): every bad input is refused before any compute, with a named cause.

Each case breaks a private copy of a small demo planet (48 read pairs) the way a hostile tester did and
checks that the run (through the CLI, or the reader API for direct users) stops with one line naming the
file, the key and the value, without a bare exception class name, and that no stage output was written.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calib_core.cli import main
from calib_core.config import ConfigError, compose_config
from calib_core.io import DataLayoutError, list_planets, open_planet
from calib_core.sim import DEMO_PLANET_ID, make_demo
from calib_core.io.validate import validate_planet

PID = DEMO_PLANET_ID
BARE = ("IndexError", "ZeroDivisionError", "UnicodeDecodeError", "KeyError", "OSError", "ArrowInvalid",
        "invalid literal", "Traceback", "could not convert")


@pytest.fixture()
def root(demo_root, tmp_path) -> Path:
    """A private copy of the session's 48-pair demo dataset."""
    return Path(shutil.copytree(demo_root, tmp_path / "data"))


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _set_csv(path: Path, column: str, value: str, row: int = 0) -> None:
    header, rows = _csv(path)
    rows[row][header.index(column)] = value
    _write_csv(path, header, rows)


def _axis(root: Path, edit) -> None:
    """Rewrite axis_info.parquet with ``edit(columns)`` applied to its float64 columns (a dict)."""
    path = root / "axis_info.parquet"
    table = pq.read_table(path)
    cols = {name: table.column(name).to_numpy().copy() for name in table.column_names}
    edit(cols)
    pq.write_table(pa.table(cols), path)


def _signal(root: Path, inst: str) -> Path:
    return root / "train" / str(PID) / f"{inst}_signal_0.parquet"


def _calibrate(root: Path, tmp_path: Path, capsys, *overrides: str) -> tuple[int, str, Path]:
    run = tmp_path / "run"
    code = main(["calibrate", "--config-name", "calib/fast", f"data.root={root}", f"run_dir={run}", *overrides])
    return code, capsys.readouterr().err, run


def _assert_refused(code: int, err: str, run: Path | None, *names: str) -> str:
    """Non-zero exit, one error line naming every string of ``names``, nothing computed."""
    lines = [line for line in err.splitlines() if line.startswith("spectramind: error:")]
    assert code != 0 and len(lines) == 1, err
    line = lines[0]
    for name in names:
        assert name in line, (name, line)
    for bare in BARE:
        assert bare not in err, (bare, err)
    if run is not None:                    # nothing computed, and the run says it failed
        assert not (run / "calib").exists() and not (run / ".scratch").exists()
        assert not (run / "depths.csv").exists()
        if (run / "run_state.json").exists():
            assert json.loads((run / "run_state.json").read_text())["status"] == "failed"
            assert json.loads((run / "qc.json").read_text())["status"] == "failed"
    return line


# ---------------------------------------------------------------------------
# time axis
# ---------------------------------------------------------------------------


def test_times_in_seconds_instead_of_hours(root, tmp_path, capsys):
    def to_seconds(cols):
        for name in ("FGS1-axis0-h", "AIRS-CH0-axis0-h"):
            cols[name] = cols[name] * 3600.0
    _axis(root, to_seconds)
    line = _assert_refused(*_calibrate(root, tmp_path, capsys), "axis_info.parquet", "FGS1-axis0-h",
                           "seconds instead of hours?", "expected hours since the visit start")
    assert "a visit of 27000" in line


def test_nan_hole_in_a_time_column(root, tmp_path, capsys):
    def hole(cols):
        cols["FGS1-axis0-h"][17] = np.nan
    _axis(root, hole)
    _assert_refused(*_calibrate(root, tmp_path, capsys), "axis_info.parquet", "'FGS1-axis0-h'",
                    "NaN at row 17", "expected NaN only as padding")


def test_reversed_times(root, tmp_path, capsys):
    def reverse(cols):
        n = np.isfinite(cols["AIRS-CH0-axis0-h"]).sum()
        cols["AIRS-CH0-axis0-h"][:n] = cols["AIRS-CH0-axis0-h"][:n][::-1].copy()
    _axis(root, reverse)
    _assert_refused(*_calibrate(root, tmp_path, capsys), "axis_info.parquet", "'AIRS-CH0-axis0-h'",
                    "not increasing at row 1", "expected strictly increasing")


def test_truncated_airs_signal_disagrees_with_axis_info(root, tmp_path, capsys):
    path = _signal(root, "AIRS-CH0")
    pq.write_table(pq.read_table(path).slice(0, 60), path)          # still valid parquet
    line = _assert_refused(*_calibrate(root, tmp_path, capsys), "axis_info.parquet", "'AIRS-CH0-axis0-h'",
                           "96 non-NaN rows", str(path), "holds 60 frames", "expected one row per frame")
    assert line.count("AIRS-CH0_signal_0.parquet") == 1


def test_truncated_airs_signal_and_axis_disagree_with_fgs1_span(root, tmp_path, capsys):
    path = _signal(root, "AIRS-CH0")
    pq.write_table(pq.read_table(path).slice(0, 60), path)

    def cut(cols):
        for name in ("AIRS-CH0-axis0-h", "AIRS-CH0-integration_time"):
            cols[name][60:] = np.nan
    _axis(root, cut)
    _assert_refused(*_calibrate(root, tmp_path, capsys), "axis_info.parquet", "'FGS1-axis0-h' covers",
                    "'AIRS-CH0-axis0-h' covers", "96 and 60 frames", "expected both instruments to span the same visit")


def test_non_positive_integration_time(root, tmp_path, capsys):
    def zero(cols):
        cols["AIRS-CH0-integration_time"][5] = 0.0
    _axis(root, zero)
    _assert_refused(*_calibrate(root, tmp_path, capsys), "axis_info.parquet", "'AIRS-CH0-integration_time'",
                    "row 5 = 0.0", "expected integration times > 0")


def test_fgs1_pairs_closer_than_at_full_size(root, tmp_path, capsys):
    def squeeze(cols):              # hours and a 7.5 h visit, but pairs 0.2 s apart: faster than the detector reads
        n = int(np.isfinite(cols["FGS1-axis0-h"]).sum())
        t = np.arange(n) * 0.1 + 0.1
        t[-2:] = [26999.0, 26999.1]
        cols["FGS1-axis0-h"][:n] = t / 3600.0
    _axis(root, squeeze)
    _assert_refused(*_calibrate(root, tmp_path, capsys), "axis_info.parquet", "'FGS1-axis0-h'", "0.2 s apart",
                    "expected pairs at least 0.4 s apart")


# ---------------------------------------------------------------------------
# ADC, star info, labels, wavelengths
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, shown", [("0.0", "'0.0'"), ("nan", "'nan'"), ("-0.4369", "'-0.4369'")])
def test_bad_adc_gain(root, tmp_path, capsys, value, shown):
    _set_csv(root / "adc_info.csv", "AIRS-CH0_adc_gain", value)
    _assert_refused(*_calibrate(root, tmp_path, capsys), "adc_info.csv", "'AIRS-CH0_adc_gain'", shown,
                    "expected a finite gain > 0")


def test_binary_adc_info(root, tmp_path, capsys):
    (root / "adc_info.csv").write_bytes(bytes(range(256)) * 16)
    _assert_refused(*_calibrate(root, tmp_path, capsys), "adc_info.csv", "binary content",
                    "expected a text CSV file")
    (root / "adc_info.csv").write_bytes(b"FGS1_adc_offset,FGS1_adc_gain\n\xff\xfe-1000,0.4369\n")
    _assert_refused(*_calibrate(root, tmp_path, capsys), "adc_info.csv", "not UTF-8 text", "0xff")


def test_sma_zero_in_star_info(root, tmp_path, capsys):
    _set_csv(root / "train_star_info.csv", "sma", "0")
    _assert_refused(*_calibrate(root, tmp_path, capsys), "train_star_info.csv", f"planet_id {PID}",
                    "sma = 0.0", "expected sma > 1")


@pytest.mark.parametrize("key, value, allowed", [("i", "95", "i in [0, 90]"), ("Ts", "-5", "Ts > 0"),
                                                 ("e", "1.0", "e in [0, 1)"), ("Rs", "x", "expected a number")])
def test_impossible_star_info(root, tmp_path, capsys, key, value, allowed):
    _set_csv(root / "train_star_info.csv", key, value)
    _assert_refused(*_calibrate(root, tmp_path, capsys), "train_star_info.csv", f"'{key}'" if value == "x"
                    else f"{key} = ", allowed)


def test_non_numeric_planet_id_in_star_info(root, tmp_path, capsys):
    header, rows = _csv(root / "train_star_info.csv")
    _write_csv(root / "train_star_info.csv", header, rows + [["K2-18b", *rows[0][1:]]])
    _assert_refused(*_calibrate(root, tmp_path, capsys), "train_star_info.csv", "line 3", "planet_id = 'K2-18b'",
                    "expected a non-negative integer id")


def test_short_row_in_train_csv(root, tmp_path, capsys):
    header, rows = _csv(root / "train.csv")
    _write_csv(root / "train.csv", header, [rows[0][:100]])
    _assert_refused(*_calibrate(root, tmp_path, capsys), "train.csv", "line 2 has 100 fields",
                    "expected 284")


def test_label_out_of_range(root, tmp_path, capsys):
    _set_csv(root / "train.csv", "wl_7", "-0.01")
    _assert_refused(*_calibrate(root, tmp_path, capsys), "train.csv", "wl_7 = -0.01", "[0, 1)")


@pytest.mark.parametrize("junk, names", [
    (b"\x89PNG\r\n\x1a\n" + bytes(200), ("wavelengths.csv", "binary content")),
    ("wl_1,wl_2\n0.7,1.9\n".encode(), ("wavelengths.csv", "expected column 'wl_3'")),
    (None, ("wavelengths.csv", "wl_2 = ", "'AIRS-CH0-axis2-um'", "expected wl_2..wl_283")),
])
def test_junk_wavelengths(root, tmp_path, capsys, junk, names):
    path = root / "wavelengths.csv"
    if junk is None:                          # well-formed, increasing, but not this instrument's grid
        header, _ = _csv(path)
        _write_csv(path, header, [[0.7, *np.linspace(1.0, 5.0, 282)]])
    else:
        path.write_bytes(junk)
    _assert_refused(*_calibrate(root, tmp_path, capsys), *names)


# ---------------------------------------------------------------------------
# parquet files
# ---------------------------------------------------------------------------


def _garble(path: Path, offset: int, n: int = 4096, seed: int = 0) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.random.default_rng(seed).bytes(n))


def _data_region_middle(path: Path) -> int:
    raw = path.read_bytes()
    footer_len = int.from_bytes(raw[-8:-4], "little")
    return (len(raw) - 8 - footer_len) // 2


@pytest.mark.parametrize("inst", ["AIRS-CH0", "FGS1"])
def test_garbage_inside_a_signal_file_stops_the_run_naming_the_file(root, tmp_path, capsys, inst):
    """Damage inside a compressed page is seen when the page is decoded: one line naming the file, a failed run."""
    path = _signal(root, inst)
    _garble(path, _data_region_middle(path))
    code, err, run = _calibrate(root, tmp_path, capsys)
    lines = [line for line in err.splitlines() if line.startswith("spectramind: error:")]
    assert code == 1 and len(lines) == 1, err
    assert str(path) in lines[0] and "damaged data after row" in lines[0] and "adc/" in lines[0]
    assert not any(bare in err for bare in BARE)
    assert json.loads((run / "run_state.json").read_text())["status"] == "failed"
    assert not (run / "depths.csv").exists() and not (run / "calib" / "adc" / inst).exists()


def test_truncated_signal_file_is_refused_before_any_stage(root, tmp_path, capsys):
    path = _signal(root, "AIRS-CH0")
    raw = path.read_bytes()
    footer = raw[-8 - int.from_bytes(raw[-8:-4], "little"):]
    path.write_bytes(raw[:len(raw) // 2] + footer)            # data cut, footer kept: every chunk now lies beyond
    _assert_refused(*_calibrate(root, tmp_path, capsys), str(path), "data region", "truncated or damaged")


def test_garbage_in_a_calibration_map(root, tmp_path, capsys):
    path = root / "train" / str(PID) / "AIRS-CH0_calibration_0" / "flat.parquet"
    _garble(path, _data_region_middle(path), n=512)
    _assert_refused(*_calibrate(root, tmp_path, capsys), str(path), "not a readable parquet file")


def test_nan_in_a_calibration_map(root, tmp_path, capsys):
    path = root / "train" / str(PID) / "AIRS-CH0_calibration_0" / "dark.parquet"
    table = pq.read_table(path)
    col = table.column("column_7").to_numpy().copy()
    col[3] = np.nan
    pq.write_table(table.set_column(7, "column_7", pa.array(col)), path)
    _assert_refused(*_calibrate(root, tmp_path, capsys), str(path), "row 3 column_7 = nan",
                    "expected finite values in the dark map")


def test_signal_values_outside_uint16_per_statistics(root, tmp_path, capsys):
    path = _signal(root, "FGS1")
    wide = pq.read_table(path).to_pandas().to_numpy().astype(np.int32)
    wide[3, 5] = 70000
    pq.write_table(pa.table({str(j): wide[:, j] for j in range(wide.shape[1])}), path)   # with statistics
    _assert_refused(*_calibrate(root, tmp_path, capsys), str(path), "70000", "expected uint16 ADC counts")


def test_direct_readers_give_named_errors(root):
    """API users get the same DataLayoutError as the CLI, not IndexError / ZeroDivisionError / ValueError."""
    planet = open_planet(root)
    _set_csv(root / "adc_info.csv", "FGS1_adc_gain", "0")
    with pytest.raises(DataLayoutError, match=r"adc_info.csv: column 'FGS1_adc_gain' = '0'; expected a finite"):
        planet.adc("FGS1")
    header, rows = _csv(root / "train.csv")
    _write_csv(root / "train.csv", header, [rows[0][:10]])
    with pytest.raises(DataLayoutError, match=r"train.csv: line 2 has 10 fields; expected 284"):
        planet.labels()
    _set_csv(root / "train_star_info.csv", "planet_id", "abc")
    with pytest.raises(DataLayoutError, match=r"train_star_info.csv: line 2: planet_id = 'abc'"):
        planet.star_info()
    (root / "wavelengths.csv").write_bytes(bytes(range(1, 256)))
    with pytest.raises(DataLayoutError, match=r"wavelengths.csv: not UTF-8 text"):
        planet.wavelengths()
    with pytest.raises(ValueError, match=r"planet_id = 'abc': expected an integer planet id"):
        open_planet(root, planet_id="abc")
    with pytest.raises(ValueError, match=r"planet_id = 1100001.5: expected an integer"):
        open_planet(root, planet_id=1100001.5)


def test_healthy_demo_planets_pass(root, detector_demo, tmp_path):
    """Legitimate data is not refused: 48 pairs, 40 pairs with dropped (all-zero) pairs, a test-split planet."""
    for data_root, split in ((root, "train"), (detector_demo, "train"),
                             (make_demo(tmp_path / "t", seed=2, n_pairs=6, split="test", planet_id=42), "test")):
        report = validate_planet(open_planet(data_root, split=split))
        assert set(report.frames) == {"FGS1", "AIRS-CH0"}
        assert all(abs(h - 7.5) < 0.01 for h in report.visit_hours.values())


# ---------------------------------------------------------------------------
# config and CLI arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("override, shown", [("data.planet_id=abc", "'abc'"),
                                             ("data.planet_id=1100001.5", "1100001.5")])
def test_planet_id_must_be_an_integer(root, tmp_path, capsys, override, shown):
    line = _assert_refused(*_calibrate(root, tmp_path, capsys, override), "ConfigError", "data.planet_id", shown,
                           "must be a non-negative integer planet id")
    assert "int()" not in line
    assert compose_config("calib/fast", ["data.planet_id=1100001"]).data.planet_id == 1100001


def test_unknown_added_key_is_refused(root, tmp_path, capsys):
    _assert_refused(*_calibrate(root, tmp_path, capsys, "+foo=1"), "ConfigError", "foo = 1",
                    "adding keys is not allowed")
    with pytest.raises(ConfigError, match="data.foo"):
        compose_config("calib/fast", ["+data.foo=1"])
    with pytest.raises(ConfigError, match=r"run_dir = 'run_dir=/tmp/a=b': not a valid override .*quoted"):
        compose_config("calib/fast", ["run_dir=/tmp/a=b"])


def test_sigma_calibrate_out_is_a_file(tmp_path, capsys):
    ids = np.arange(4) + 10
    rng = np.random.default_rng(0)
    y = rng.uniform(0.01, 0.02, (4, 283))
    sigma = np.full((4, 283), 1e-4)
    with open(tmp_path / "preds.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["planet_id", *[f"wl_{i + 1}" for i in range(283)], *[f"sigma_{i + 1}" for i in range(283)]])
        w.writerows([[i, *y[k], *sigma[k]] for k, i in enumerate(ids)])
    _write_csv(tmp_path / "train.csv", ["planet_id", *[f"wl_{i + 1}" for i in range(283)]],
               [[i, *y[k]] for k, i in enumerate(ids)])
    out = tmp_path / "out_file"
    out.write_text("not a directory")
    code = main(["sigma-calibrate", "--preds", str(tmp_path / "preds.csv"), "--targets", str(tmp_path / "train.csv"),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--out {out}: exists and is not a directory" in err and "Traceback" not in err
    assert out.read_text() == "not a directory"


def test_make_demo_argument_errors(tmp_path, capsys):
    for argv, names in ((["--seed", "-1"], ("--seed", "-1")), (["--n-pairs", "1"], ("--n-pairs", "1")),
                        (["--n-pairs", "8", "--drop-pairs", "8"], ("--drop-pairs", "8"))):
        code = main(["make-demo", str(tmp_path / "d"), *argv])
        _assert_refused(code, capsys.readouterr().err, None, "ConfigError", *names)
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------
# paths outside the dataset root
# ---------------------------------------------------------------------------


def test_symlinks_leading_outside_the_root_are_refused_alike(root, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(root / "train" / str(PID), outside / "planet")
    messages = []
    for target in (outside / "planet", outside / "missing"):        # existing and dangling targets
        link = root / "train" / "777"
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target)
        for call in (lambda: list_planets(root), lambda: open_planet(root, planet_id=PID)):
            with pytest.raises(DataLayoutError) as info:
                call()
            messages.append(str(info.value))
    assert len(set(messages)) == 1
    assert messages[0] == (f"{root / 'train' / '777'}: planet directory resolves outside the dataset root "
                           f"{os.path.realpath(root)}; expected a path inside the dataset root")
    (root / "train" / "777").unlink()

    csv_messages = []
    shutil.copy(root / "train_star_info.csv", outside / "planet" / "star.csv")
    for target in (outside / "planet" / "star.csv", outside / "gone.csv"):
        link = root / "train_star_info.csv"
        link.unlink()
        link.symlink_to(target)
        with pytest.raises(DataLayoutError) as info:
            validate_planet(open_planet(root))
        csv_messages.append(str(info.value))
    assert csv_messages[0] == csv_messages[1]
    assert "train_star_info.csv: star info resolves outside the dataset root" in csv_messages[0]


# ---------------------------------------------------------------------------
# make-demo never damages an existing dataset
# ---------------------------------------------------------------------------


def test_make_demo_adds_planets_and_overwrite_keeps_the_others(tmp_path, capsys):
    root = tmp_path / "multi"
    for pid, seed in ((11, 1), (12, 2)):
        assert main(["make-demo", str(root), "--n-pairs", "6", "--planet-id", str(pid), "--seed", str(seed)]) == 0
    assert list_planets(root) == [11, 12]
    labels = {pid: open_planet(root, pid).labels() for pid in (11, 12)}
    stars = {pid: open_planet(root, pid).star_info() for pid in (11, 12)}
    assert not np.array_equal(labels[11], labels[12])
    for pid in (11, 12):
        validate_planet(open_planet(root, pid))
    shared = {name: (root / name).read_bytes() for name in ("axis_info.parquet", "adc_info.csv", "wavelengths.csv")}

    # an existing planet needs --overwrite; with it, planet 12 is replaced and planet 11 kept
    assert main(["make-demo", str(root), "--n-pairs", "6", "--planet-id", "12", "--seed", "3"]) == 1
    assert "planet 12 exists" in capsys.readouterr().err
    assert main(["make-demo", str(root), "--n-pairs", "6", "--planet-id", "12", "--seed", "3", "--overwrite"]) == 0
    assert list_planets(root) == [11, 12]
    np.testing.assert_array_equal(open_planet(root, 11).labels(), labels[11])
    assert open_planet(root, 11).star_info() == stars[11]
    assert not np.array_equal(open_planet(root, 12).labels(), labels[12])
    assert [r[0] for r in _csv(root / "train.csv")[1]] == ["11", "12"]
    assert [r[0] for r in _csv(root / "train_star_info.csv")[1]] == ["11", "12"]
    assert {name: (root / name).read_bytes() for name in shared} == shared

    # a planet whose shared files would differ (another n_pairs) is refused, nothing written
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    for argv in (["--planet-id", "13"], ["--planet-id", "12", "--overwrite"]):
        code = main(["make-demo", str(root), "--n-pairs", "8", *argv])
        line = _assert_refused(code, capsys.readouterr().err, None, "axis_info.parquet", "12 AIRS-CH0 / 12 FGS1",
                               "16 AIRS-CH0 / 16 FGS1", "nothing was written")
        assert "train/11" in line
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before

    # a test-split planet joins the same root: test_star_info.csv is created, train files untouched
    make_demo(root, seed=4, n_pairs=6, planet_id=21, split="test")
    assert list_planets(root, "test") == [21] and open_planet(root, 21, split="test").labels() is None
    assert [r[0] for r in _csv(root / "train.csv")[1]] == ["11", "12"]


def test_make_demo_refuses_a_corrupt_dataset_csv(tmp_path):
    root = make_demo(tmp_path / "d", n_pairs=4, planet_id=1)
    (root / "train_star_info.csv").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataLayoutError, match="train_star_info.csv: binary content"):
        make_demo(root, n_pairs=4, planet_id=2)
    assert (root / "train_star_info.csv").read_bytes() == b"\x00\x01garbage"
    assert list_planets(root) == [1]
