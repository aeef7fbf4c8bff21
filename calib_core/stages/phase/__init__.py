"""Phase alignment: ephemeris, folding, transit windows and binning with honest errors.

A visit covers one transit (7.5 h of a 3-8 d orbit), so the folded phase is
essentially time from mid-transit; the code is general (several transits fold
onto each other).

Ephemeris
    The period comes from the star info (``P``, days) or ``ephemeris.period_days``;
    the mid-transit time is ``ephemeris.t0`` (in ``ephemeris.t0_unit``) or, when
    null, the centre of a trapezoid fitted to the white light
    (:func:`calib_core.transit.estimate_transit`).  That white-light estimate is
    always computed and the gate ``t0_offset_h`` compares it with the t0 used,
    which catches a wrong ephemeris or wrong time units.
Fold
    Same semantics as astropy/lightkurve ``fold(period, epoch_time,
    wrap_phase, normalize_phase)``: ``phase = ((t - t0) + P - wrap) mod P - (P - wrap)``,
    so phases lie in ``[wrap - 1, wrap)`` cycles.  With ``normalize_phase: true``
    phases are in cycles, otherwise in **hours** from mid-transit (lightkurve
    uses days there; the stage's phase unit is recorded in the meta).
Windows
    Phases of the contact points t1..t4: from the star-info orbit (a/Rs, i) with
    ``k = sqrt(white-light depth)``, or from the trapezoid estimate.
Binning
    ``nbins`` equal bins over the observed phase range, numpy-histogram
    convention (left-closed, the last bin closed), so the edges equal
    lightkurve's ``bin(time_bin_start=min, time_bin_size=(max-min)/nbins)``.
    Only finite, unflagged samples count (``binned_count``; lightkurve#1493).
    Errors (``binning.error``): ``propagated`` = ``sqrt(sum err**2) / n`` (the
    error of the mean; lightkurve reports the rms error ``sqrt(sum err**2 / n)``,
    i.e. ``sqrt(n)`` times larger, a per-sample scatter), ``scatter`` =
    ``std(ddof=1) / sqrt(n)`` (NaN for n < 2), ``max`` = the larger of the two
    (conservative when the propagated errors miss jitter noise).  For the
    ``median`` aggregator errors are multiplied by ``sqrt(pi/2)`` (asymptotic
    efficiency of the median for Gaussian noise).
Flags
    ``phase_flags`` (M, C) uint16: :class:`PhaseFlag` ``EMPTY`` (no usable
    sample), ``LOW_COUNT`` (fewer than ``binning.min_count``); nonzero = do not use.
"""

from ..info import StageInfo

INFO = StageInfo("phase", "Phase alignment", input_kind="series", output_kind="series",
                 default_io=("trace_norm", "phase_fold"))
