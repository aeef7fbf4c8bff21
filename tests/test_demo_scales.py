"""make_demo's stellar-brightness and jitter scales: what they change, what they leave byte-identical."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from calib_core.sim import DEMO_PLANET_ID, load_truth, make_demo
from oracles.demo import expected_cds


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_unit_scales_are_byte_identical_and_unrecorded(tmp_path):
    plain = make_demo(tmp_path / "plain", seed=4, n_pairs=4)
    explicit = make_demo(tmp_path / "explicit", seed=4, n_pairs=4, flux_scale=1.0, jitter_scale=1.0)
    files = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(explicit) for p in explicit.rglob("*") if p.is_file())
    assert all(_digest(plain / f) == _digest(explicit / f) for f in files)
    truth = json.loads((plain / "truth" / str(DEMO_PLANET_ID) / "truth.json").read_text())
    assert "flux_scale" not in truth and "jitter_scale" not in truth


def test_scales_change_the_star_and_the_jitter_and_are_recorded(tmp_path):
    base = make_demo(tmp_path / "base", seed=4, n_pairs=6)
    faint = make_demo(tmp_path / "faint", seed=4, n_pairs=6, flux_scale=0.1, jitter_scale=3.0)
    still = make_demo(tmp_path / "still", seed=4, n_pairs=6, jitter_scale=0.0)
    t_base, t_faint, t_still = (load_truth(r, DEMO_PLANET_ID) for r in (base, faint, still))
    assert (t_faint["flux_scale"], t_faint["jitter_scale"]) == (0.1, 3.0)
    assert (t_still["flux_scale"], t_still["jitter_scale"]) == (1.0, 0.0)
    for inst in ("AIRS-CH0", "FGS1"):
        # same planet and random streams: the sky scales exactly, the jitter by its factor
        np.testing.assert_allclose(t_faint[f"{inst}_sky"], 0.1 * t_base[f"{inst}_sky"], rtol=1e-12)
        np.testing.assert_allclose(t_faint[f"{inst}_jitter"], 3.0 * t_base[f"{inst}_jitter"], rtol=1e-12)
        assert not t_still[f"{inst}_jitter"].any()
        assert t_faint["instruments"][inst]["jitter_rms_px"] == pytest.approx(
            3.0 * t_base["instruments"][inst]["jitter_rms_px"])
        np.testing.assert_array_equal(t_faint[f"{inst}_transit"], t_base[f"{inst}_transit"])
    # expected_cds follows the recorded (scaled) scene
    cds_faint = expected_cds(faint, DEMO_PLANET_ID, "FGS1", [0])
    sky = t_faint["FGS1_sky"]
    assert cds_faint.sum() == pytest.approx(sky.sum() * 0.1 * t_faint["FGS1_transit"][0, 0]
                                            * t_faint["FGS1_drift"][0, 0], rel=0.02)
    assert t_faint["depth"] == t_base["depth"]


@pytest.mark.parametrize("kwargs, fragment", [({"flux_scale": 0.0}, "flux_scale"),
                                              ({"flux_scale": float("nan")}, "flux_scale"),
                                              ({"jitter_scale": -1.0}, "jitter_scale")])
def test_bad_scales_raise(tmp_path, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        make_demo(tmp_path / "x", n_pairs=4, **kwargs)
