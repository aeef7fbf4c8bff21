"""Plot *data* of a sigma calibration (no plotting library): for the app tab and the audit report.

Every plot is a dict::

    {"kind": "curve" | "histogram" | "bars" | "table", "title": str, "xlabel": str, "ylabel": str, ...}

* ``curve`` / ``bars``: ``x`` (list) and ``y``, a dict ``{series label: list}``
  of one or more series drawn on the same axes (same length as ``x``).
* ``histogram``: ``edges`` (list, n + 1) and ``counts``, a dict
  ``{series label: list of n}`` (here ``before``, ``after`` and the
  ``N(0, 1)`` expectation).
* ``table``: ``columns`` (header list) and ``rows`` (lists of cells).

:func:`diagnostics` builds them from the metrics dict of the CLI
(``metrics.json``) or of the ``top_level_calib`` stage: both hold ``before`` /
``after`` (from :func:`calib_core.sigma.metrics.evaluate`, only when labels
exist) and ``model`` (``method``, per-bin ``scale``, ``details``).
"""

from __future__ import annotations

__all__ = ["SUMMARY_METRICS", "diagnostics", "summary_table", "calibration_curve_plot", "z_histogram_plot",
           "scale_plot", "coverage_plot"]

#: (key in an evaluate() dict, label) of the before/after table, in display order
SUMMARY_METRICS = (
    ("challenge_score", "challenge score"),
    ("nll", "Gaussian NLL"),
    ("coverage_68", "coverage 68 %"),
    ("coverage_95", "coverage 95 %"),
    ("ece", "ECE"),
    ("z_mean", "z mean"),
    ("z_std", "z std"),
)


def summary_table(before: dict, after: dict) -> dict:
    """Before/after table of the :data:`SUMMARY_METRICS`."""
    rows = [[label, before[key], after[key], after[key] - before[key]] for key, label in SUMMARY_METRICS]
    return {"kind": "table", "title": "Before vs after calibration", "columns": ["metric", "before", "after", "change"],
            "rows": rows, "xlabel": "", "ylabel": ""}


def calibration_curve_plot(before: dict, after: dict) -> dict:
    """Empirical vs nominal coverage of central Gaussian intervals."""
    nominal = before["calibration_curve"]["nominal"]
    return {"kind": "curve", "title": "Calibration curve", "x": nominal,
            "y": {"ideal": nominal, "before": before["calibration_curve"]["empirical"],
                  "after": after["calibration_curve"]["empirical"]},
            "xlabel": "nominal coverage", "ylabel": "empirical coverage"}


def z_histogram_plot(before: dict, after: dict) -> dict:
    """z-score histograms before and after, with the standard-normal expectation."""
    return {"kind": "histogram", "title": "z-scores (y - mu) / sigma", "edges": before["z_histogram"]["edges"],
            "counts": {"before": before["z_histogram"]["counts"], "after": after["z_histogram"]["counts"],
                       "N(0, 1)": after["z_histogram"]["normal"]},
            "xlabel": "z (|z| > 6 counted in the end bins)", "ylabel": "values"}


def scale_plot(model: dict) -> dict:
    """Per-bin sigma scale; for COREL also its graph and conformal parts."""
    scale = model["scale"]
    details = model.get("details", {})
    series = {"scale": scale}
    if model["method"] == "corel":
        series.update({"graph scale": details["graph_scale"], "conformal factor": details["conformal_factor"]})
        title = "COREL per-bin sigma scale"
    else:
        title = "Per-bin temperature T" if isinstance(details.get("T"), list) else "Global temperature T"
    return {"kind": "curve", "title": title, "x": list(range(len(scale))), "y": series,
            "xlabel": "bin (0 = FGS1)", "ylabel": "sigma' / sigma"}


def coverage_plot(before: dict, after: dict, target: float = 0.68) -> dict:
    """Per-bin 68 % coverage before and after, with the target level."""
    n_bins = len(after["per_bin_coverage_68"])
    return {"kind": "curve", "title": "Per-bin coverage (68 % intervals)", "x": list(range(n_bins)),
            "y": {"before": before["per_bin_coverage_68"], "after": after["per_bin_coverage_68"],
                  "target": [target] * n_bins},
            "xlabel": "bin (0 = FGS1)", "ylabel": "coverage"}


def diagnostics(metrics: dict) -> list[dict]:
    """All plots available in a calibration metrics dict (none for a skipped stage).

    Parameters
    ----------
    metrics : dict
        ``metrics.json`` of ``spectramind sigma-calibrate`` or the metrics of
        the ``top_level_calib`` stage.

    Returns
    -------
    list of dict
        Table, calibration curve, z histogram, per-bin scale and per-bin
        coverage (the ones the metrics allow).
    """
    if metrics.get("skipped"):
        return []
    plots = []
    before, after = metrics.get("before"), metrics.get("after")
    if before is not None and after is not None:
        plots += [summary_table(before, after), calibration_curve_plot(before, after),
                  z_histogram_plot(before, after)]
    if "model" in metrics:
        plots.append(scale_plot(metrics["model"]))
    if before is not None and after is not None:
        plots.append(coverage_plot(before, after))
    return plots
