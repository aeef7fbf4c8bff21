"""Profile composition, the seed's override recipes, and config errors (no data is read)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from calib_core.config import ConfigError, compose_config, config_hash, config_to_yaml, validate_config

SEED_RECIPES = [
    (["calib.cds.pairing.order_by=timestamp", "calib.cds.pairing.policy=nearest",
      "calib.cds.pairing.window_s=3.0"],
     {"calib.cds.pairing.order_by": "timestamp", "calib.cds.pairing.policy": "nearest",
      "calib.cds.pairing.window_s": 3.0}),
    (["calib.photometry.photometry.method=psf", "calib.photometry.psf.model=gaussian_moffat"],
     {"calib.photometry.photometry.method": "psf", "calib.photometry.psf.model": "gaussian_moffat"}),
    (["calib.trace.along_wavelength.method=spline", "calib.trace.along_wavelength.spline.knots=12"],
     {"calib.trace.along_wavelength.method": "spline", "calib.trace.along_wavelength.spline.knots": 12}),
    (["calib.top_level_calib.method=temperature", "calib.top_level_calib.temperature.per_bin=true"],
     {"calib.top_level_calib.method": "temperature", "calib.top_level_calib.temperature.per_bin": True}),
]


@pytest.mark.parametrize("overrides, expected", SEED_RECIPES)
def test_seed_override_recipes_compose_and_change_the_config(overrides, expected):
    base = compose_config("calib/nominal")
    cfg = compose_config("calib/nominal", overrides)
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value
        assert OmegaConf.select(base, key) != value or len(expected) > 1
    assert config_hash(cfg) != config_hash(base)


def test_profile_matrix():
    fast, nominal, strict = (validate_config(compose_config(f"calib/{p}")) for p in ("fast", "nominal", "strict"))
    assert [s for s in fast.enabled if s not in ("depths", "top_level_calib")] == [
        "adc", "photometry", "trace", "phase"]
    seven = ["adc", "dark", "flat", "cds", "photometry", "trace", "phase"]
    assert nominal.enabled[:7] == seven and strict.enabled[:7] == seven
    # fast: aperture small radius, no along-time detrend, coarse bins, no ADC diagnostics
    assert fast.stages["photometry"].aperture.radius_px == 6
    assert fast.stages["trace"].along_time.enabled is False
    assert fast.stages["phase"].binning.nbins == 120
    assert fast.stages["adc"].diagnostics.enabled is False
    # nominal: aperture r=8, poly continuum, 200 bins
    assert nominal.stages["photometry"].photometry.method == "aperture"
    assert nominal.stages["photometry"].aperture.radius_px == 8
    assert nominal.stages["trace"].along_wavelength.method == "poly"
    assert nominal.stages["phase"].binning.nbins == 200
    # strict: reference pixels, per-pixel dark with unit conversion, illumination, CDS temporal filter,
    # optimal photometry, 16-knot spline, 400 bins
    s = strict.stages
    assert s["adc"].reference_pixel.use is True
    assert s["dark"].per_pixel_map.convert_units.enabled is True
    assert s["flat"].illumination_correction.enabled is True
    assert s["cds"].temporal_filter.enabled is True
    assert s["photometry"].photometry.method == "optimal"
    assert s["trace"].along_wavelength.method == "spline"
    assert s["trace"].along_wavelength.spline.knots == 16
    assert s["phase"].binning.nbins == 400


def test_cli_overrides_win_over_the_method_block():
    cfg = compose_config("calib/nominal", ["calib.phase.binning.nbins=300", "calib.photometry.aperture.radius_px=5"])
    assert cfg.calib.phase.binning.nbins == 300
    assert cfg.calib.photometry.aperture.radius_px == 5
    assert dict(cfg.calib.method) == {}


def test_literal_dotted_method_key_of_the_seed_skeleton(tmp_path):
    nominal = compose_config("calib/nominal")
    text = config_to_yaml(nominal) + "calib.method:\n  phase.binning.nbins: 77\n"
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    assert compose_config(str(path)).calib.phase.binning.nbins == 77


def test_exported_profile_reproduces_the_config_hash(tmp_path):
    cfg = compose_config("calib/strict", ["calib.cds.pairing.window_s=2.5", "data.demo_seed=3"])
    path = tmp_path / "tuned.yaml"
    path.write_text(config_to_yaml(cfg))
    again = compose_config(str(path))
    assert config_hash(again) == config_hash(cfg)
    assert again.calib.cds.pairing.window_s == 2.5


@pytest.mark.parametrize("overrides, key, fragment", [
    (["calib.cds.pairing.windw_s=3.0"], "calib.cds.pairing.windw_s", "allowed here:"),
    (["calib.photometry.aperture.radius_px=-2"], "calib.photometry.aperture.radius_px", "must be >"),
    (["calib.phase.binning.nbins=0"], "calib.phase.binning.nbins", "must be >"),
    (["calib.photometry.photometry.method=magic"], "calib.photometry.photometry.method", "must be one of"),
    (["calib.cds.pairing.window_s=abc"], "calib.cds.pairing.window_s", ""),
    (["calib.cds.pairing.policy=closest"], "calib.cds.pairing.policy", "must be one of"),
    (["calib.flat.io.input_key=raw_frames"], "calib.flat.io.input_key", "output_key of the previous enabled stage"),
    (["calib.dark.enabled=false"], "calib.flat.io.input_key", "'adc'"),
    (["data.split=validation"], "data.split", "must be one of"),
    (["data.instruments=[FGS2]"], "data.instruments", "must be one of"),
])
def test_bad_values_fail_with_one_line_naming_key_value_and_allowed(overrides, key, fragment):
    with pytest.raises(ConfigError) as err:
        compose_config("calib/nominal", overrides)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(key), msg
    assert fragment in msg


def test_revalidation_gives_fresh_typed_configs_and_sees_every_change():
    cfg = compose_config("calib/nominal")
    first, second = validate_config(cfg), validate_config(cfg)
    assert first.stages == second.stages and first.data == second.data
    assert first.stages["phase"] is not second.stages["phase"]
    first.stages["phase"].binning.nbins = 7                    # a caller mutating its typed config ...
    assert validate_config(cfg).stages["phase"].binning.nbins == cfg.calib.phase.binning.nbins   # ... changes nothing
    OmegaConf.update(cfg, "calib.phase.binning.nbins", 41, merge=False)
    assert validate_config(cfg).stages["phase"].binning.nbins == 41
    OmegaConf.update(cfg, "calib.phase.binning.nbins", 0, merge=False)
    with pytest.raises(ConfigError, match=r"calib\.phase\.binning\.nbins = 0"):
        validate_config(cfg)
    OmegaConf.update(cfg, "calib.phase.binning.nbins", "many", merge=False)
    with pytest.raises(ConfigError, match=r"calib\.phase\.binning\.nbins"):
        validate_config(cfg)


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(ConfigError, match="calib/fast, calib/nominal, calib/strict"):
        compose_config("calib/nominl")


def test_bad_yaml_profile_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("calib:\n  adc:\n    enabled: true\n    gainz: 2\n")
    with pytest.raises(ConfigError, match=r"calib\.adc\.gainz"):
        compose_config(str(path))
    path.write_text("just: [a list\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        compose_config(str(path))


def test_cli_cfg_job_resolve_prints_the_composed_config():
    out = subprocess.run(
        [sys.executable, "-m", "calib_core.cli", "calibrate", "--config-name", "calib/nominal",
         "--cfg", "job", "--resolve", "calib.cds.pairing.window_s=3.0"],
        capture_output=True, text=True, check=True,
    ).stdout
    cfg = OmegaConf.create(out)
    assert cfg.calib.cds.pairing.window_s == 3.0
    assert cfg.run_dir == "runs/nominal"      # interpolation resolved
    assert list(cfg.calib.keys())[:7] == ["adc", "dark", "flat", "cds", "photometry", "trace", "phase"]


def test_cli_bad_override_exits_nonzero_with_one_line():
    proc = subprocess.run(
        [sys.executable, "-m", "calib_core.cli", "calibrate", "calib.phase.binning.nbins=0"],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "calib.phase.binning.nbins" in lines[0] and "0" in lines[0]
