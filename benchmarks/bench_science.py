"""Time every stage of a profile on a full-size planet, the science stages in particular.

Runs the chain (default: nominal) on a full-size demo planet (11250 AIRS-CH0 / 135000 FGS1 frames,
generated once into ``--data``) or on a real planet (``--root``/``--planet-id``), then re-runs the
science stages alone (``runtime.from_stage=photometry``: the detector stages come from the cache) and
prints each stage's time per instrument, the peak memory and the depths' agreement with the truth when
labels exist.

    python benchmarks/bench_science.py [--profile calib/nominal] [--data ~/.cache/spectramind/bench-full-seed0]
    python benchmarks/bench_science.py calib.adc.cache.write_intermediate=false \
        calib.dark.cache.write_intermediate=false calib.flat.cache.write_intermediate=false   # streamed
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from calib_core.chain import run_chain
from calib_core.config import compose_config
from calib_core.io import open_planet
from calib_core.sim import make_demo


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _table(result, title: str) -> None:
    print(f"\n{title}")
    print(f"{'stage':<16}{'instrument':<11}{'status':<8}{'seconds':>9}")
    for r in result.records:
        print(f"{r.stage:<16}{(r.instrument or 'planet'):<11}{r.status:<8}{r.seconds:>9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="calib/nominal")
    ap.add_argument("--root", type=Path, default=None, help="dataset root (default: a full-size demo planet)")
    ap.add_argument("--planet-id", type=int, default=None)
    ap.add_argument("--data", type=Path, default=Path.home() / ".cache" / "spectramind" / "bench-full-seed0",
                    help="where the full-size demo planet is generated once")
    ap.add_argument("--run-dir", type=Path, default=Path("runs") / "bench_science")
    ap.add_argument("overrides", nargs="*", help="config overrides, as for spectramind calibrate")
    args = ap.parse_args()

    root = args.root
    if root is None:
        root = args.data
        if not (root / "train.csv").is_file():
            t0 = time.perf_counter()
            make_demo(root, seed=0, full=True, overwrite=True)
            print(f"generated the full-size demo planet in {time.perf_counter() - t0:.1f} s: {root}")
    overrides = [f"data.root={root}", f"run_dir={args.run_dir}", *args.overrides]
    if args.planet_id is not None:
        overrides.append(f"data.planet_id={args.planet_id}")
    planet = open_planet(root, args.planet_id)
    print(f"planet {planet.planet_id}: AIRS-CH0 {planet.n_frames('AIRS-CH0')} frames, "
          f"FGS1 {planet.n_frames('FGS1')} frames; profile {args.profile}")

    t0 = time.perf_counter()
    first = run_chain(compose_config(args.profile, overrides))
    _table(first, f"whole chain ({time.perf_counter() - t0:.1f} s wall)")
    t0 = time.perf_counter()
    science = run_chain(compose_config(args.profile, [*overrides, "runtime.from_stage=photometry"]))
    _table(science, f"science stages again, detector stages cached ({time.perf_counter() - t0:.1f} s wall)")
    print(f"\npeak RSS: {_peak_rss_gb():.2f} GB")

    labels = planet.labels()
    depths = science.output("depths")
    if labels is not None and depths is not None:
        z = (np.asarray(depths.fields["mu"]) - labels) / np.asarray(depths.fields["sigma"])
        print(f"depths vs truth: z mean {z.mean():+.2f}, z std {z.std():.2f}, "
              f"median sigma {np.median(depths.fields['sigma']) * 1e6:.0f} ppm")


if __name__ == "__main__":
    main()
