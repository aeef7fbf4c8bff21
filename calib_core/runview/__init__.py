"""Read a finished run directory back for investigation: per-channel light curves, run snapshots, comparisons.

Everything the app's investigation tabs show is computed here (the app only draws):

* :func:`light_curves`: for one channel or a binned range of channels of one instrument, the raw
  (photometry) flux, the trace stage's trend, the detrended flux, its phase, the transit model of the
  depths stage (its geometry, depth and limb darkening) times a refitted baseline, and the residuals;
* :func:`read_run` / :class:`RunSnapshot`: what a run produced (status, typed config, QC gates,
  spectrum), copied into memory so that it outlives later runs into the same directory;
* :func:`config_diff`, :func:`compare_spectra`, :func:`gates_side_by_side`: two snapshots compared.

A run directory is read through its ``qc.json`` (each stage record names its output directory),
so both the app's session runs and ``spectramind batch`` run directories can be opened.
Every path is resolved and must stay inside the run directory.
"""

from .batch import BATCH_COLUMNS, read_batch
from .compare import (RunSnapshot, SpectrumDiff, compare_spectra, config_diff, gates_side_by_side, read_run,
                      snapshot_result, white_light_overlays)
from .lightcurves import LightCurves, channel_at, channel_grid, light_curves, lightcurve_plots, nearest_channel
from .pixels import PixelSeries, frame_at, pixel_at, pixel_series
from .reading import (RESULT_FILES, STAGE_ZIP_MAX_BYTES, load_result, load_stage_output, read_qc, results_zip,
                      save_run, stage_arrays_zip)

__all__ = ["BATCH_COLUMNS", "LightCurves", "PixelSeries", "RESULT_FILES", "RunSnapshot", "SpectrumDiff",
           "channel_at", "channel_grid", "frame_at", "compare_spectra", "config_diff", "gates_side_by_side", "light_curves",
           "lightcurve_plots", "load_result", "load_stage_output", "nearest_channel", "pixel_at", "pixel_series",
           "read_batch", "read_qc", "read_run", "results_zip", "save_run", "snapshot_result", "stage_arrays_zip",
           "STAGE_ZIP_MAX_BYTES", "white_light_overlays"]
