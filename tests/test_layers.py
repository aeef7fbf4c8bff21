"""The layers a newcomer can see: schemas without numerics, one source for defaults, engine without app."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calib_core.config import compose_config
from calib_core.config.defaults import rendered_files
from calib_core.stages import STAGE_NAMES, stage_info, stage_schema

ROOT = Path(__file__).resolve().parents[1]
NUMERICS = ("numba", "scipy", "astropy", "pyarrow")


def test_validating_a_profile_imports_no_numerics():
    code = ("import sys\nfrom calib_core.config import compose_config, validate_config, config_hash\n"
            "from calib_core.plan import invalidated_by, schedule\n"
            "cfg = compose_config('calib/strict', ['calib.phase.binning.nbins=50'])\n"
            "validate_config(cfg); config_hash(cfg); schedule(cfg); invalidated_by(cfg, cfg)\n"
            f"print(sorted(m for m in {NUMERICS!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_engine_never_imports_the_app():
    for path in (ROOT / "calib_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("app", "spectramind_app") for n in names), (path, names)


MAX_MODULE_LINES = 600   #: one concept per file: a module longer than this holds more than one


def test_every_engine_module_is_at_most_600_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "calib_core").rglob("*.py")}
    assert len(sizes) > 50                                    # the tree was found
    too_long = {path: n for path, n in sorted(sizes.items()) if n > MAX_MODULE_LINES}
    assert not too_long, f"split these by concept (configs/calib/architecture.md, 'Layers'): {too_long}"


def test_installed_package_has_no_bare_app_module(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("spectramind-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"calib_core", "spectramind_app"}
    modules = {n for n in names if n.endswith(".py")}
    for path in (ROOT / "calib_core").rglob("*.py"):          # every engine module is packaged
        assert str(path.relative_to(ROOT)) in modules, path
    assert "spectramind_app/main.py" in modules
    target = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    probe = subprocess.run([sys.executable, "-c", "import app"], cwd=tmp_path, capture_output=True, text=True,
                           env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert probe.returncode != 0 and "No module named 'app'" in probe.stderr


@pytest.mark.parametrize("path", sorted(rendered_files()), ids=lambda p: p.name)
def test_yaml_defaults_are_the_rendering_of_the_schemas(path):
    """configs/calib/<stage>.yaml and configs/spectramind.yaml cannot disagree with the schemas."""
    assert path.read_text() == rendered_files()[path], f"run: python -m calib_core.config.defaults ({path.name})"


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_default_io_keys_chain_like_the_design(name):
    assert tuple(OmegaConf.structured(stage_schema(name)).io.values()) == stage_info(name).default_io


@pytest.mark.parametrize("profile", ["fast", "nominal", "strict"])
def test_a_profile_lists_only_what_it_changes(profile):
    raw = OmegaConf.load(ROOT / "configs" / "calib" / f"{profile}.yaml")
    defaults = {name: OmegaConf.structured(stage_schema(name)) for name in STAGE_NAMES}
    for dotted, value in (raw.calib.method or {}).items():
        stage, key = dotted.split(".", 1)
        assert OmegaConf.select(defaults[stage], key) != value, f"{profile}: {dotted} restates its default"


SEED_MATRIX = {   # the seed's composition skeletons (architecture.md section 6), as composed values
    "nominal": {"photometry.photometry.method": "aperture", "photometry.aperture.radius_px": 8,
                "trace.along_wavelength.method": "poly", "phase.binning.nbins": 200},
    "fast": {"adc.diagnostics.enabled": False, "photometry.photometry.method": "aperture",
             "photometry.aperture.radius_px": 6, "trace.along_time.enabled": False, "phase.binning.nbins": 120},
    "strict": {"adc.reference_pixel.use": True, "dark.per_pixel_map.convert_units.enabled": True,
               "flat.illumination_correction.enabled": True, "cds.temporal_filter.enabled": True,
               "photometry.photometry.method": "optimal", "trace.along_wavelength.method": "spline",
               "trace.along_wavelength.spline.knots": 16, "phase.binning.nbins": 400},
}


@pytest.mark.parametrize("profile", sorted(SEED_MATRIX))
def test_profiles_compose_the_seed_matrix(profile):
    cfg = compose_config(f"calib/{profile}")
    for key, value in SEED_MATRIX[profile].items():
        assert OmegaConf.select(cfg.calib, key) == value, (profile, key)
    fast_stages = [s for s in cfg.calib if s not in ("profile", "method")]
    if profile == "fast":
        assert fast_stages[:4] == ["adc", "photometry", "trace", "phase"]
    else:
        assert fast_stages[:7] == ["adc", "dark", "flat", "cds", "photometry", "trace", "phase"]
