"""``spectramind sigma-calibrate`` end to end, input validation and the top_level_calib config."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from calib_core.config.base import ConfigError
from calib_core.config.compose import CONFIG_DIR, compose_config, validate_config
from calib_core.sigma.cli import load_config, main
from calib_core.sigma.model import load_model
from calib_core.sigma.predictions import read_predictions
from calib_core.stages.top_level_calib.config import TopLevelCalibConfig

B = 283
YAML = CONFIG_DIR / "calib" / "top_level_calib.yaml"


def _data(n: int, seed: int = 0, factor: float = 2.0):
    rng = np.random.default_rng(seed)
    ids = np.arange(5000, 5000 + n) * 7
    y = rng.uniform(0.005, 0.03, size=(n, 1)) + 1e-4 * np.sin(np.linspace(0, 6, B))
    sigma = 1e-4 * rng.lognormal(0, 0.3, size=(n, B))
    mu = y + factor * sigma * rng.standard_normal((n, B))
    return ids, y, mu, sigma


def _submission(path, ids, mu, sigma):
    cols = {"planet_id": ids, **{f"wl_{i + 1}": mu[:, i] for i in range(mu.shape[1])},
            **{f"sigma_{i + 1}": sigma[:, i] for i in range(sigma.shape[1])}}
    pd.DataFrame(cols).to_csv(path, index=False)
    return path


def _labels(path, ids, y):
    pd.DataFrame({"planet_id": ids, **{f"wl_{i + 1}": y[:, i] for i in range(y.shape[1])}}).to_csv(path, index=False)
    return path


@pytest.fixture
def files(tmp_path):
    ids, y, mu, sigma = _data(40)
    extra_ids, extra_y, _, _ = _data(5, seed=9)
    labels = _labels(tmp_path / "train.csv", np.concatenate([ids[::-1], extra_ids + 1]),
                     np.vstack([y[::-1], extra_y]))           # shuffled, with unrelated planets
    return {"ids": ids, "y": y, "mu": mu, "sigma": sigma, "labels": labels,
            "preds": _submission(tmp_path / "oof.csv", ids, mu, sigma), "tmp": tmp_path}


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------


def _leaf_keys(node, prefix=""):
    keys = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        keys |= _leaf_keys(value, path + ".") if isinstance(value, dict) else {path}
    return keys


def test_yaml_matches_dataclass_exactly():
    assert YAML.read_text().splitlines()[0] == "# @package calib.top_level_calib"
    structured = OmegaConf.structured(TopLevelCalibConfig)
    loaded = OmegaConf.load(YAML)
    assert OmegaConf.merge(structured, loaded) == structured
    assert _leaf_keys(OmegaConf.to_container(loaded)) == _leaf_keys(OmegaConf.to_container(structured))


def test_seed_override_paths_work_verbatim():
    cfg = load_config(None, ["calib.top_level_calib.method=temperature",
                             "calib.top_level_calib.temperature.per_bin=true"])
    assert cfg.method == "temperature" and cfg.temperature.per_bin is True
    assert isinstance(cfg, TopLevelCalibConfig)
    assert load_config(None, []).method == "none"


@pytest.mark.parametrize("override, message", [
    ("calib.top_level_calib.method=gnn", "must be one of none, temperature, corel"),
    ("calib.top_level_calib.corel.conformal=mondrian", "must be one of per_bin, group"),
    ("calib.top_level_calib.temperature.clamp=[5.0,1.0]", "min < max"),
    ("calib.top_level_calib.corel.coverage_target=1.5", "must be > 0 and < 1"),
    ("calib.top_level_calib.temperature.perbin=true", "no such key"),
    ("calib.top_level_calib.model_path=/nonexistent/model.json", "file does not exist"),
    ("calib.cds.pairing.window_s=3", "only calib.top_level_calib.* overrides"),
])
def test_bad_overrides_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("[", r"\[")) as info:
        load_config(None, [override])
    assert str(info.value).count("\n") == 0


def test_hydra_composition_with_seed_override_recipe(tmp_path):
    """The stage file under its @package header, composed by Hydra, with the seed's verbatim overrides."""
    (tmp_path / "calib").mkdir()
    shutil.copy(YAML, tmp_path / "calib" / "top_level_calib.yaml")
    (tmp_path / "calib" / "sigma_only.yaml").write_text(
        "# @package _global_\ndefaults:\n  - top_level_calib\n  - _self_\n"
        "calib:\n  profile: sigma_only\n  top_level_calib:\n    io:\n      input_key: raw_frames\n")
    cfg = compose_config("calib/sigma_only", ["calib.top_level_calib.method=temperature",
                                              "calib.top_level_calib.temperature.per_bin=true"], config_dir=tmp_path)
    typed = validate_config(cfg).stages["top_level_calib"]
    assert isinstance(typed, TopLevelCalibConfig)
    assert typed.method == "temperature" and typed.temperature.per_bin is True
    assert typed.corel.smoothness == 10.0


def test_profile_route_takes_the_composed_section(tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text("calib:\n  profile: sigma_only\n  top_level_calib:\n    io:\n      input_key: raw_frames\n"
                       "    method: corel\n    corel:\n      smoothness: 5.0\n")
    cfg = load_config(str(profile), ["calib.top_level_calib.corel.smoothness=3.0"])
    assert cfg.method == "corel" and cfg.corel.smoothness == 3.0


# ---------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------


def test_cli_csv_end_to_end(files, capsys):
    out = files["tmp"] / "out"
    code, stdout, err = _run(capsys, "--preds", files["preds"], "--targets", files["labels"], "--out", out)
    assert code == 0, err
    assert "global T" in stdout and "challenge score" in stdout and "->" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "temperature" and "method none" in metrics["notes"][0]
    split = metrics["split"]
    assert split["n_calibration"] == 20 and split["n_evaluation"] == 20
    assert sorted(split["calibration_ids"] + split["evaluation_ids"]) == sorted(files["ids"].tolist())
    assert metrics["model"]["details"]["T"] == pytest.approx(2.0, rel=0.05)
    before, after = metrics["before"], metrics["after"]
    assert after["challenge_score"] > before["challenge_score"] and after["nll"] < before["nll"]
    assert abs(after["coverage_68"] - 0.68) < 0.03
    for key in ("coverage_95", "ece", "z_mean", "z_std", "per_bin_coverage_68"):
        assert key in after
    original = read_predictions(files["preds"])
    calibrated = read_predictions(out / "oof_calibrated.csv")
    np.testing.assert_array_equal(calibrated.ids, files["ids"])
    np.testing.assert_array_equal(calibrated.mu, original.mu)                     # lossless round trip
    model = load_model(out / "model.json")
    np.testing.assert_array_equal(calibrated.sigma, original.sigma * model.scale)
    plots = json.loads((out / "plots.json").read_text())
    assert [p["kind"] for p in plots] == ["table", "curve", "histogram", "curve", "curve"]


def test_cli_corel_with_npz_apply_to_and_wavelengths(files, capsys):
    tmp = files["tmp"]
    np.savez(tmp / "test_preds.npz", mu=files["mu"][:3], sigma=files["sigma"][:3], ids=files["ids"][:3])
    wl = np.concatenate([[0.7], np.linspace(1.95, 3.9, B - 1)])
    pd.DataFrame([wl], columns=[f"wl_{i + 1}" for i in range(B)]).to_csv(tmp / "wavelengths.csv", index=False)
    out = tmp / "out"
    code, stdout, err = _run(capsys, "--preds", files["preds"], "--targets", files["labels"], "--out", out,
                             "--apply-to", tmp / "test_preds.npz", "--wavelengths", tmp / "wavelengths.csv",
                             "calib.top_level_calib.method=corel", "calib.top_level_calib.split.seed=3")
    assert code == 0, err
    assert "COREL scales" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["inputs"]["wavelengths"].endswith("wavelengths.csv")
    assert abs(metrics["after"]["coverage_68"] - 0.68) < 0.05
    with np.load(out / "test_preds_calibrated.npz") as data:
        np.testing.assert_array_equal(data["ids"], files["ids"][:3])
        np.testing.assert_allclose(data["sigma"], files["sigma"][:3] * data["scale"])
    assert load_model(out / "model.json").method == "corel"


def test_cli_npz_without_ids_matches_by_row(tmp_path, capsys):
    ids, y, mu, sigma = _data(12, seed=2)
    np.savez(tmp_path / "preds.npz", mu=mu, sigma=sigma)
    labels = _labels(tmp_path / "train.csv", ids, y)
    code, _, err = _run(capsys, "--preds", tmp_path / "preds.npz", "--targets", labels, "--out", tmp_path / "out")
    assert code == 0, err
    with np.load(tmp_path / "out" / "preds_calibrated.npz") as data:
        assert set(data.files) == {"mu", "sigma", "scale"}


def test_cli_batch_of_run_directories(tmp_path, capsys):
    ids, y, mu, sigma = _data(6, seed=4)
    for k, pid in enumerate(ids):
        run = tmp_path / "runs" / f"run_{pid}"
        run.mkdir(parents=True)
        _submission(run / "depths.csv", ids[k:k + 1], mu[k:k + 1], sigma[k:k + 1])
    labels = _labels(tmp_path / "train.csv", ids, y)
    code, _, err = _run(capsys, "--preds", tmp_path / "runs", "--targets", labels, "--out", tmp_path / "out")
    assert code == 0, err
    combined = read_predictions(tmp_path / "out" / "runs_calibrated.csv")
    assert sorted(combined.ids.tolist()) == sorted(ids.tolist())
    code, _, err = _run(capsys, "--preds", tmp_path / "runs" / "*" / "depths.csv", "--targets", labels,
                        "--out", tmp_path / "out2")
    assert code == 0, err
    assert (tmp_path / "out2" / "depths_calibrated.csv").is_file()


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_pt_without_torch_is_a_clear_error(files, capsys):
    pt = files["tmp"] / "preds.pt"
    pt.write_bytes(b"not read")
    code, _, err = _run(capsys, "--preds", pt, "--targets", files["labels"], "--out", files["tmp"] / "out")
    assert code == 2
    assert "preds.pt" in err and "needs torch" in err and ".npz" in err


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _bad_sigma(sigma):
    bad = sigma.copy()
    bad[3, 7] = 0.0
    return bad


def _nan_mu(mu):
    bad = mu.copy()
    bad[1, 0] = np.nan
    return bad


@pytest.mark.parametrize("case, message", [
    ("sigma_zero", r"oof\.csv: sigma must be > 0: 1 value\(s\), first at planet 35021 bin 7"),
    ("nan_mu", r"oof\.csv: mu has non-finite or non-numeric values"),
    ("bins", r"oof\.csv: expected 283 bins in columns wl_1\.\.wl_283, found wl_1\.\.wl_282"),
    ("duplicate", r"oof\.csv: duplicate planet ids: 35000"),
    ("missing_labels", r"train\.csv: no labels for 1 planet id\(s\) of .*oof\.csv: 35273"),
    ("one_planet", r"at least 2 are needed"),
    ("format", r"preds\.parquet: unsupported format '\.parquet'"),
    ("no_file", r"absent\.csv: no such file"),
])
def test_invalid_inputs_exit_2_with_one_line(files, capsys, case, message):
    tmp, ids, mu, sigma = files["tmp"], files["ids"], files["mu"], files["sigma"]
    preds, labels = files["preds"], files["labels"]
    if case == "sigma_zero":
        _submission(preds, ids, mu, _bad_sigma(sigma))
    elif case == "nan_mu":
        _submission(preds, ids, _nan_mu(mu), sigma)
    elif case == "bins":
        _submission(preds, ids, mu[:, :-1], sigma[:, :-1])
    elif case == "duplicate":
        _submission(preds, np.concatenate([ids[:1], ids[:-1]]), mu, sigma)
    elif case == "missing_labels":
        _labels(labels, ids[:-1], files["y"][:-1])
    elif case == "one_planet":
        _submission(preds, ids[:1], mu[:1], sigma[:1])
    elif case == "format":
        preds = tmp / "preds.parquet"
        preds.write_bytes(b"")
    elif case == "no_file":
        preds = tmp / "absent.csv"
    out = tmp / "out"
    code, stdout, err = _run(capsys, "--preds", preds, "--targets", labels, "--out", out)
    assert code == 2 and stdout == ""
    assert err.startswith("spectramind sigma-calibrate: error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_bad_override_from_the_command_line(files, capsys):
    code, _, err = _run(capsys, "--preds", files["preds"], "--targets", files["labels"], "--out",
                        files["tmp"] / "out", "calib.top_level_calib.method=gnn")
    assert code == 2 and "calib.top_level_calib.method = 'gnn'" in err


def test_missing_required_argument_returns_2(capsys):
    assert main(["--preds", "x.csv"]) == 2
    assert "--targets" in capsys.readouterr().err


def test_negative_mu_is_reported(tmp_path, capsys):
    ids, y, mu, sigma = _data(10, seed=6)
    mu[2, 5] = -1e-4
    preds = _submission(tmp_path / "preds.csv", ids, mu, sigma)
    code, stdout, err = _run(capsys, "--preds", preds, "--targets", _labels(tmp_path / "train.csv", ids, y),
                             "--out", tmp_path / "out")
    assert code == 0, err
    assert "1 negative mu value(s)" in stdout
