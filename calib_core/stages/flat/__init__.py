"""Flat stage: divide by the pixel response (flat field), flag dead and unusable-flat pixels.

The flat actually applied is built once per run from the calibration ``flat``:

1. pixels with a non-finite flat or ``flat <= min_flat`` are ``BAD_FLAT`` and get
   a flat of 1 (their data are left unscaled and must not be used);
2. optional illumination correction: a smooth robust fit of the flat's
   large-scale structure (a low-order 2-D Legendre polynomial, or a cubic
   B-spline along each detector row) is divided out, so the flat keeps only the
   pixel-to-pixel response; the fitted field is stored and plotted;
3. optional renormalisation to mean 1 over the good pixels (neither dead nor
   bad-flat).

Frames: ``data /= flat``, ``var /= flat**2`` (and the per-read read-noise
variance ``read_var /= flat**2``); dead pixels (calibration ``dead``) are
flagged ``DEAD``.
"""

from ..info import StageInfo

INFO = StageInfo("flat", "Flat field", default_io=("dark_corrected", "flat_corrected"))
