"""Trace normalisation: continuum along wavelength, detrending along time, robust masks.

Model of a photometry series ``F(t, lambda)`` (electrons per frame and channel)::

    F = continuum(lambda) * trend(t, lambda) * transit(t, lambda) * noise

* ``continuum`` is a smooth function of wavelength (``along_wavelength``:
  poly | spline | lowess) fitted to the **out-of-transit median spectrum**; it is
  fixed in time, so it never divides the (wavelength-wide) transit out of a
  frame.  A continuum fitted frame by frame would do exactly that (every
  in-transit frame would be re-normalised to 1 and the depth would vanish).
* ``trend`` is per channel: a low-order function of time (``along_time``: poly |
  spline in time, plus optional linear/quadratic terms in the measured pointing
  offsets) fitted by weighted least squares on **out-of-transit frames only** and
  evaluated on every frame.  Its constant term carries the channel's level
  relative to the continuum, so the normalised flux is 1 out of transit in
  every channel.  With ``along_time.enabled: false`` the trend is that constant
  only (one number per channel).
* The transit window comes from ``transit_mask``: ``auto`` finds it in the
  white light (box search + trapezoid fit, :func:`calib_core.transit.estimate_transit`);
  ``ephemeris`` takes the mid-transit time of ``calib.phase.ephemeris`` and the
  duration of the star-info orbit.  Both are padded by ``pad_frac`` of the
  duration on each side.

Outputs (series, per instrument)::

    trace_flux_norm   (B, C)  photometry_flux / trace_flux_scale (1 out of transit)
    trace_flux_err    (B, C)  sqrt(photometry_flux_var) / trace_flux_scale
    trace_flux_scale  (B, C)  continuum[None, :] * trend, electrons: what the flux is divided by
    trace_continuum   (C,)    the continuum alone, electrons
    trace_flags       (B, C)  uint16: photometry flags (its own bits, kept) | DQ.NONFINITE | DQ.OUTLIER
                              (nonzero = do not use)
    channel_grid      (C,)    wavelength, um
    time_s            (B,)    seconds since the visit start
    oot_mask          (B,)    bool, frame used as out-of-transit

Outliers are robust residuals from a running median along time (which follows
the transit shape, so in-transit frames are never clipped for being low),
sigma-clipped per channel with a MAD scale (``robust.sigma``, ``robust.maxiters``).

``step.py`` is the stage adapter (inputs, transit window from the ephemeris,
QC gates, plot data); the algorithms are in the package: ``masks`` (usable
samples, outliers, white light), ``basis`` (Legendre and B-spline designs),
``continuum`` (along wavelength), ``trend`` (along time) and ``normalise``
(the stage on arrays and its QC numbers).
"""

from ..info import StageInfo

INFO = StageInfo("trace", "Trace normalisation", input_kind="series", output_kind="series",
                 default_io=("photometry", "trace_norm"),
                 reads_config=("phase.ephemeris", "phase.time"))   # transit_mask.method: ephemeris
