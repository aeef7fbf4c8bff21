"""CDS stage: pair each signal read with its first read, difference, reject cosmic rays.

Pairing (``pairing``): frames are ordered by index or by timestamp; with
``n_minus_1`` a signal read (``read_kind`` 1) pairs with the frame just before
it when that is a first read (``read_kind`` 0); with ``nearest`` it pairs with
the latest earlier first read within ``window_s`` seconds (each first read is
used once).  Every signal read gives one output frame; a frame whose partner is
missing, out of the window or ``DROPPED`` (or which is dropped itself) is
``UNPAIRED`` (NaN data and variance, exptime 0) and counted, so the CDS time
grid is never shortened silently.  First reads left without a signal read are
counted as orphans.  The pair table ``pair_index`` ([first, signal], -1 when
unpaired), the gaps ``pair_dt_s`` and the orphans are stored with the output.

Difference of a pair (``s`` signal, ``f`` first read, flat-corrected):
``data = s - f``, ``exptime = t_s - t_f`` (the increment), ``read_kind = 2``,
``dq = dq_s | dq_f`` and

    var = 2 r + max(var_s - var_f, 0)

where ``r`` is the read-noise variance of one read (``read_var``).  With
``var_x = r + Q_x / F`` (Poisson of the charge accumulated since the reset,
scaled by the flat) the two reads share the charge ``Q_f``, which cancels in
the difference; only the increment ``Q_s - Q_f`` contributes Poisson variance
(``var_s - var_f``), not ``Q_s + Q_f``.

Robust differencing (``robust``): a second pass over the written frames (a
sample of frames first, for each pixel's level and robust scatter, then time
chunks with a halo of ``window // 2`` frames, so memory stays bounded by the
chunk size) compares each value with the medians of its ``window // 2``
neighbours before and after it in time; a value departing from both, in the
same direction, by more than ``sigma`` robust (MAD) sigmas of the pixel's
residuals is ``COSMIC_RAY`` and replaced by the median of its neighbours
(``REPAIRED``).  Replacements are applied after the pass, so the result does
not depend on the chunk size.  A transit (slow, or a step as
sharp as one frame) departs from one side only and is never flagged.

Temporal filter (``temporal_filter``): frames whose total flux (or any row's
flux) spikes away from the neighbouring frames by more than ``sigma`` robust
sigmas (same two-sided test) are flagged ``OUTLIER`` as a whole.
"""

from ..info import StageInfo

INFO = StageInfo("cds", "Correlated double sampling", default_io=("flat_corrected", "cds_corrected"))
