"""``spectramind``: the command line of the calibration engine.

Subcommands::

    spectramind calibrate --config-name calib/nominal [--cfg job [--resolve]] [key=value ...]
    spectramind audit     --config-name calib/strict  [key=value ...]
    spectramind batch     --config-name calib/nominal --out DIR [--planets 1,2] [--workers 2] data.root=DIR
    spectramind make-demo OUT [--seed N] [--full] [--n-pairs N] [--drop-pairs N] [--flux-scale F]
                          [--jitter-scale F] [--overwrite]
    spectramind sigma-calibrate --preds P --targets T --out DIR [...]
    spectramind app [--port N] [--address A] [--data-root DIR] [--no-show]

Every error ends the process with a non-zero exit code and one line saying why.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["main"]


def _add_profile_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--config-name", "-cn", default=default,
                   help=f"profile name under configs/ (e.g. calib/nominal) or a YAML file (default {default})")
    p.add_argument("--config-dir", default=None, help="configs directory (default: the project's configs/)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. calib.cds.pairing.window_s=3.0")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spectramind", description="Ariel calibration chain and diagnostics")
    sub = parser.add_subparsers(dest="command", required=True)

    cal = sub.add_parser("calibrate", help="run the calibration chain on a planet (default: the demo planet)")
    _add_profile_args(cal, "calib/nominal")
    cal.add_argument("--cfg", choices=("job",), help="print the composed config and exit (Hydra style)")
    cal.add_argument("--resolve", action="store_true", help="with --cfg: resolve interpolations")
    cal.add_argument("--package", "-p", default=None, help="with --cfg: print only this subtree (e.g. calib.cds)")

    aud = sub.add_parser("audit", help="strict run: every QC gate is an error; writes audit.html + audit.json")
    _add_profile_args(aud, "calib/strict")

    bat = sub.add_parser("batch", help="calibrate many planets of a dataset in parallel (Dask distributed)")
    _add_profile_args(bat, "calib/nominal")
    bat.add_argument("--out", type=Path, required=True, help="batch output directory")
    bat.add_argument("--planets", default=None, help="comma-separated planet ids (default: all of data.split)")
    bat.add_argument("--workers", type=int, default=2, help="worker processes")

    demo = sub.add_parser("make-demo", help="write a synthetic planet with ground truth in the Kaggle layout")
    demo.add_argument("out", type=Path)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--full", action="store_true", help="full size: 11250 AIRS-CH0 / 135000 FGS1 frames")
    demo.add_argument("--n-pairs", type=int, default=None, help="read pairs per instrument (default demo size)")
    demo.add_argument("--drop-pairs", type=int, default=0, help="pairs lost in telemetry (zero-filled)")
    demo.add_argument("--flux-scale", type=float, default=1.0, help="stellar brightness factor (0.1 = fainter star)")
    demo.add_argument("--jitter-scale", type=float, default=1.0, help="pointing jitter rms factor (0 = none)")
    demo.add_argument("--planet-id", type=int, default=None)
    demo.add_argument("--overwrite", action="store_true")

    sig = sub.add_parser("sigma-calibrate", help="fit/apply sigma calibration (temperature, COREL)",
                         add_help=False)
    sig.add_argument("rest", nargs=argparse.REMAINDER)

    app = sub.add_parser("app", help="serve the Panel diagnostics app")
    app.add_argument("--port", type=int, default=5006)
    app.add_argument("--address", default="127.0.0.1")
    app.add_argument("--data-root", type=Path, default=None, help="dataset root the app may read (Kaggle layout)")
    app.add_argument("--no-show", action="store_true", help="do not open a browser")
    return parser


def _print_summary(result) -> None:
    print(f"run_dir: {result.run_dir}")
    print(f"{'stage':<16}{'instrument':<11}{'status':<8}{'time s':>8}  QC")
    for r in result.records:
        if r.status == "skipped":
            qc = r.reason
        elif not r.gates:
            qc = "-"
        else:
            qc = " ".join(f"{g.name}:{'pass' if g.passed else g.action.upper()}" for g in r.gates)
        print(f"{r.stage:<16}{(r.instrument or 'planet'):<11}{r.status:<8}{r.seconds:>8.2f}  {qc}")
    outputs = ["config.yaml", "qc.json", "run_hash_summary.json", "calib/<stage>/<instrument>/"]
    if (result.run_dir / "depths.csv").exists():
        outputs.append("depths.csv")
    print("outputs: " + ", ".join(outputs))
    depths = result.record("depths")
    if depths is not None and "residual_z_std" in depths.metrics:
        m = depths.metrics
        print(f"depths vs truth: white-light z {m['z_white']:+.2f}, per-channel (mu - truth)/sigma "
              f"mean {m['residual_z_mean']:+.2f} std {m['residual_z_std']:.2f}, t0 {m['t0_h']:.3f} h")
    print(f"status: {result.status}  config_hash: {result.config_hash[:16]}")


def _calibrate(args: argparse.Namespace, audit: bool) -> int:
    from omegaconf import OmegaConf

    from .config import compose_config, config_to_yaml

    cfg = compose_config(args.config_name, args.overrides, args.config_dir)
    if not audit and args.cfg == "job":
        node = OmegaConf.select(cfg, args.package) if args.package else cfg
        if node is None:
            raise KeyError(f"--package {args.package}: no such section")
        text = OmegaConf.to_yaml(node, resolve=args.resolve) if args.package else config_to_yaml(cfg, args.resolve)
        print(text, end="")
        return 0
    if audit:
        from .audit import run_audit

        result, report = run_audit(cfg)
        _print_summary(result)
        print(f"audit report: {report}")
        return 0 if result.status == "ok" else 1
    from .chain import run_chain

    result = run_chain(cfg, progress=None)
    _print_summary(result)
    return 0


def _batch(args: argparse.Namespace) -> int:
    from .batch import run_batch
    from .config import compose_config

    cfg = compose_config(args.config_name, args.overrides, args.config_dir)   # validate before starting workers
    if cfg.data.root is None:
        raise ValueError("batch needs data.root=DIR (a dataset in the Kaggle layout)")
    ids = [int(p) for p in args.planets.split(",")] if args.planets else None
    outcomes = run_batch(args.config_name, args.overrides, root=cfg.data.root, out_dir=args.out,
                         split=cfg.data.split, planet_ids=ids, workers=args.workers)
    for o in outcomes:
        print(f"{o.planet_id:>12}  {o.status:<7}{o.seconds:>8.1f} s  {o.message}")
    n_bad = sum(o.status != "ok" for o in outcomes)
    print(f"{len(outcomes) - n_bad}/{len(outcomes)} planets ok; submission: {args.out / 'submission.csv'}")
    return 1 if n_bad else 0


def _make_demo(args: argparse.Namespace) -> int:
    from .io.demo import make_demo

    out = make_demo(args.out, seed=args.seed, full=args.full, planet_id=args.planet_id, n_pairs=args.n_pairs,
                    drop_pairs=args.drop_pairs, overwrite=args.overwrite, flux_scale=args.flux_scale,
                    jitter_scale=args.jitter_scale)
    print(f"demo planet written to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spectramind`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sigma-calibrate"]:      # its own parser owns every option
        from .sigma.cli import main as sigma_main

        return sigma_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "calibrate":
            return _calibrate(args, audit=False)
        if args.command == "audit":
            return _calibrate(args, audit=True)
        if args.command == "batch":
            return _batch(args)
        if args.command == "make-demo":
            return _make_demo(args)
        if args.command == "app":
            from app.serve import serve

            return serve(port=args.port, address=args.address, data_root=args.data_root, show=not args.no_show)
    except KeyboardInterrupt:
        print("spectramind: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, no traceback, for every failure
        print(f"spectramind: error: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        return 2 if type(exc).__name__ == "ConfigError" else 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
