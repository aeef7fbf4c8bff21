"""Files a profile names are confined to the data root, the run directory or configs/ (calib_core.paths).

The refusal is one line that is identical whether the file exists or not, nothing of a refused file is
read, files that are allowed but do not parse are named without quoting them, and the cache key hashes
the same resolved file the stage reads.  Also: a profile's section order carries no meaning.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from calib_core import cli
from calib_core.chain import run_chain
from calib_core.config import ConfigError, compose_config, config_hash, config_to_yaml
from calib_core.config.compose import CONFIG_DIR
from calib_core.paths import CONFINED, confine_file, config_files
from calib_core.plan import invalidated_by, schedule, stage_inputs

SECRET = "TOP-SECRET-LINE-7f3a"
FILE_KEYS = ("calib.top_level_calib.model_path", "calib.top_level_calib.wavelengths_path",
             "calib.dark.per_pixel_map.path")
#: the detector stages only (the per-pixel dark map is read by the dark stage)
DARK_ONLY = ["calib.flat.enabled=false", "calib.cds.enabled=false", "calib.photometry.enabled=false",
             "calib.trace.enabled=false", "calib.phase.enabled=false", "calib.depths.enabled=false",
             "calib.top_level_calib.enabled=false"]


@pytest.fixture
def outside(tmp_path):
    """A directory outside every allowed root, holding a file with a recognisable line."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.json").write_text(f"{SECRET}\n")
    (d / "secret.npy").write_text(f"{SECRET}\n")
    return d


def _cfg(root: Path, run_dir: Path, *overrides: str):
    return compose_config("calib/nominal", [f"data.root={root}", f"run_dir={run_dir}", *overrides])


@pytest.mark.parametrize("key", FILE_KEYS)
def test_outside_files_are_refused_alike_whether_they_exist_or_not(key, demo_root, tmp_path, outside):
    cfg = _cfg(demo_root, tmp_path / "run")
    link = demo_root / "linked-secret.json"            # inside the root, leading outside
    link.symlink_to(outside / "secret.json")
    dangling = demo_root / "linked-missing.json"
    dangling.symlink_to(outside / "missing.json")
    try:
        values = ["/etc/passwd", "/nonexistent/dir/model.json", str(outside / "secret.json"),
                  str(outside / "missing.json"), str(link), str(dangling), "../outside/secret.json",
                  str(demo_root / ".." / "outside" / "secret.json"), "~/.bashrc"]
        for value in values:
            with pytest.raises(ConfigError) as info:
                confine_file(key, value, cfg)
            assert str(info.value) == f"{key} = {value!r}: {CONFINED}"
            assert SECRET not in str(info.value)
    finally:
        link.unlink()
        dangling.unlink()


def test_files_under_the_data_root_run_dir_and_configs_are_allowed(demo_root, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = _cfg(demo_root, run)
    (demo_root / "maps").mkdir(exist_ok=True)
    inside = demo_root / "maps" / "dark.npy"
    np.save(inside, np.zeros((2, 2), np.float32))
    assert confine_file("k", "maps/dark.npy", cfg) == inside.resolve()           # relative: against the root
    assert confine_file("k", str(inside), cfg) == inside.resolve()
    assert confine_file("k", str(run / "m.json"), cfg) == (run / "m.json").resolve()   # may not exist yet
    assert confine_file("k", str(CONFIG_DIR / "calib" / "nominal.yaml"), cfg) == \
        (CONFIG_DIR / "calib" / "nominal.yaml").resolve()
    link = demo_root / "maps" / "alias.npy"                                          # a link inside the root
    link.symlink_to(inside)
    assert confine_file("k", str(link), cfg) == inside.resolve()
    with pytest.raises(ConfigError, match="not a file"):
        confine_file("k", str(demo_root / "maps"), cfg)
    # the demo planet (data.root null): its directory is the data root
    demo = compose_config("calib/nominal", [f"run_dir={run}"])
    with pytest.raises(ConfigError, match="must be a file under the data root"):
        confine_file("k", str(inside), demo)
    assert config_files(_cfg(demo_root, run, "calib.dark.per_pixel_map.path=maps/dark.npy")) == {
        "calib.dark.per_pixel_map.path": inside.resolve()}


@pytest.mark.parametrize("override", [
    "calib.top_level_calib.model_path={p}", "calib.top_level_calib.wavelengths_path={p}",
    "calib.dark.per_pixel_map.path={p}"])
def test_a_run_refuses_an_outside_file_before_reading_anything(override, demo_root, tmp_path, outside):
    messages = []
    for target in (outside / "secret.json", outside / "missing.json"):
        cfg = _cfg(demo_root, tmp_path / "run", "calib.dark.method=per_pixel_map", override.format(p=target))
        with pytest.raises(ConfigError) as info:
            stage_inputs(cfg, override.split(".")[1], tmp_path / "run")          # the cache key never hashes it
        assert CONFINED in str(info.value)
        result = run_chain(cfg, run_dir=tmp_path / "run", raise_on_failure=False)
        assert result.status == "failed" and result.records == []
        messages.append(result.message.replace(str(target), "<path>"))
        assert SECRET not in result.message and SECRET not in (tmp_path / "run" / "run.log").read_text()
    assert messages[0] == messages[1] == f"{override.split('=')[0]} = '<path>': {CONFINED}"


def test_the_cli_refuses_an_outside_file_with_the_same_line(demo_root, tmp_path, outside, capsys):
    for target in (outside / "secret.json", outside / "missing.json"):
        code = cli.main(["calibrate", f"data.root={demo_root}", f"run_dir={tmp_path / 'run'}",
                         f"calib.top_level_calib.model_path={target}"])
        err = capsys.readouterr().err
        assert code != 0
        assert f"calib.top_level_calib.model_path = '{target}': {CONFINED}" in err
        assert SECRET not in err


def test_allowed_files_that_do_not_parse_are_named_without_their_content(demo_root, tmp_path):
    run = tmp_path / "run"
    (demo_root / "bad").mkdir(exist_ok=True)
    for name in ("model.json", "wavelengths.csv", "dark.npy", "dark.parquet"):
        (demo_root / "bad" / name).write_text(f"{SECRET},{SECRET}\n\"{SECRET}\n")
    cases = [("calib.top_level_calib.method=temperature", "calib.top_level_calib.model_path=bad/model.json"),
             ("calib.dark.method=per_pixel_map", "calib.dark.per_pixel_map.path=bad/dark.npy"),
             ("calib.dark.method=per_pixel_map", "calib.dark.per_pixel_map.path=bad/dark.parquet")]
    for overrides in cases:
        extra = DARK_ONLY if "dark" in overrides[0] else []
        result = run_chain(_cfg(demo_root, run, *overrides, *extra), run_dir=run, raise_on_failure=False)
        assert result.status == "failed", overrides
        assert "bad/" in result.message and SECRET not in result.message, result.message
        assert SECRET not in (run / "run.log").read_text()
    from calib_core.sigma.predictions import read_wavelengths

    with pytest.raises(Exception) as info:
        read_wavelengths(demo_root / "bad" / "wavelengths.csv")
    assert "wavelengths.csv" in str(info.value) and SECRET not in str(info.value)


def test_an_allowed_map_is_read_from_its_resolved_path_and_hashed_into_the_cache_key(demo_root, tmp_path):
    from calib_core.io import open_planet

    run = tmp_path / "run"
    planet = open_planet(demo_root)
    rate = np.asarray(planet.calibration("FGS1").dark, dtype=np.float64)
    (demo_root / "maps").mkdir(exist_ok=True)
    np.save(demo_root / "maps" / "fgs_dark.npy", rate)
    # one map for both instruments would not fit AIRS-CH0: calibrate FGS1 only
    base = [*DARK_ONLY, "calib.dark.method=per_pixel_map", "data.instruments=[FGS1]"]
    cfg = _cfg(demo_root, run, *base, "calib.dark.per_pixel_map.path=maps/fgs_dark.npy")
    result = run_chain(cfg, run_dir=run)
    dark = result.record("dark", "FGS1")
    assert dark.status == "ran"
    assert str((demo_root / "maps" / "fgs_dark.npy").resolve()) in dark.metrics["dark_source"]
    np.testing.assert_allclose(np.asarray(result.output("dark", "FGS1").fields["dark_applied"]), rate, rtol=1e-6)
    # new content under the same name changes the key: the dark stage is stale and recomputed
    before = stage_inputs(cfg, "dark", run)
    np.save(demo_root / "maps" / "fgs_dark.npy", rate * 2)
    assert stage_inputs(cfg, "dark", run) != before
    assert run_chain(cfg, run_dir=run).record("dark", "FGS1").status == "ran"
    assert run_chain(cfg, run_dir=run).record("dark", "FGS1").status == "cached"


def test_a_profile_is_the_same_whatever_the_order_of_its_sections(tmp_path, capsys):
    nominal = compose_config("calib/nominal")
    resorted = tmp_path / "resorted.yaml"
    resorted.write_text(yaml.safe_dump(yaml.safe_load(config_to_yaml(nominal)), sort_keys=True))
    assert list(yaml.safe_load(resorted.read_text())["calib"])[0] == "adc" and \
        list(yaml.safe_load(resorted.read_text())["calib"])[1] == "cds"          # really re-sorted
    cfg = compose_config(str(resorted))
    assert schedule(cfg) == schedule(nominal) and config_hash(cfg) == config_hash(nominal)
    assert invalidated_by(nominal, cfg) == []
    # reversed sections, and the CLI
    reversed_ = tmp_path / "reversed.yaml"
    doc = yaml.safe_load(config_to_yaml(nominal))
    doc["calib"] = dict(reversed(list(doc["calib"].items())))
    reversed_.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert config_hash(compose_config(str(reversed_))) == config_hash(nominal)
    assert cli.main(["calibrate", "--config-name", str(resorted), "--cfg", "job", "--resolve"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["calib"]["phase"]["binning"]["nbins"] == nominal.calib.phase.binning.nbins
