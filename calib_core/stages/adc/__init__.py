"""ADC stage: raw DN -> electrons, reference pixels, linearisation, saturation.

Order of operations for every read (frame) of a visit:

1. ``e = DN / gain + offset`` (electrons; gain/offset from ``adc_info.csv`` or
   the config, :mod:`.conversion`), the raw-DN flags ``ADC_FLOOR`` (0 DN),
   ``SATURATED`` (>= ``saturation.level_dn``) and ``DROPPED`` (an all-zero
   telemetry frame);
2. optional reference-pixel common-mode correction (:mod:`.reference`): for each
   frame, the clipped mean (or median) over the quiet pixels of the left/right
   border columns of (pixel - the pixel's time median for the frame's read
   kind), minus the time median of that level, is subtracted from the whole
   frame.  The per-pixel template keeps the static stellar wings out of the
   estimate; their *variation* (e.g. the transit seen in the wings) does leak
   into the offset, at the level of the wing flux times the depth.  The
   estimate's variance is added to every pixel's read variance; the border
   columns are flagged ``REFERENCE``;
3. optional linearisation with the per-pixel polynomial ``linear_corr``
   (``e_lin = sum_k c_k e^k``, the organisers' ``apply_linear_corr``), ``NONLINEAR``
   outside ``[valid_min_e, valid_max_e]``; ``SATURATED`` at/above the full well;
4. optional clamp, and the variance ``read^2 + max(e_lin, 0)`` (read noise plus
   the Poisson variance of the charge accumulated since the reset).

Steps 1, 3 and 4 are one compiled pass per chunk (:mod:`.convert`); the stage
(:mod:`.step`) runs it as a stream, or in two passes with reference pixels.
"""

from ..info import StageInfo

INFO = StageInfo("adc", "ADC conversion", input_kind="raw", output_kind="frames",
                 default_io=("raw_frames", "adc_corrected"))
