"""Photometry stage: calibrated frames -> per-sample flux series (FGS1) and spectra (AIRS-CH0).

Input: a frame store (``cds_corrected``; or ``adc_corrected`` reads in the
fast profile, in which case each first/signal read pair is measured with the
same weights and differenced at the flux level, removing the reset level).
Output: one sample per CDS frame / read pair (time = the signal read's time),
written through the :class:`~calib_core.frames.StoreWriter` as

=========================  ===========  =================================================
field                      shape        meaning
=========================  ===========  =================================================
photometry_flux            (B, C) f8    flux per sample (e-); FGS1 ``C = 1``; AIRS-CH0
                                        ``C = 282`` channels in ascending wavelength
photometry_flux_var        (B, C) f8    propagated variance (e-^2)
photometry_sky             (B, C) f8    background level per pixel (e-)
photometry_centroid_x      (B,) f8      FGS1 centroid column; AIRS-CH0 spectral shift
                                        (columns, relative to the reference stack)
photometry_centroid_y      (B,) f8      FGS1 centroid row; AIRS-CH0 trace row centre
photometry_flags           (B, C) u2    :class:`~calib_core.stages.photometry.flags.PhotFlag` bits
time_s                     (B,) f8      sample time (s since the visit start)
n_bad_pixels               (B, C) i4    unusable pixels inside the extraction window
channel_wavelength_um      (C,) f8      wavelength of each channel (ascending)
reference_frame            (H, W') f8   sky-subtracted median stack (AIRS: cropped,
                                        ascending wavelength)
=========================  ===========  =================================================

The numerics are the vectorised functions of the modules beside this one
(methods: ``aperture``, ``psf``, ``optimal``; see :mod:`.fgs` and :mod:`.airs`):
:mod:`.pairs` (frames -> samples), :mod:`.background`, :mod:`.centroid`,
:mod:`.geometry` (aperture and box overlaps), :mod:`.extract` (linear weights),
:mod:`.psf`, :mod:`.stack` (reference stacks), :mod:`.flags`, :mod:`.metrics`.
"""

from ..info import StageInfo

INFO = StageInfo("photometry", "Photometry", input_kind="frames", output_kind="series",
                 default_io=("cds_corrected", "photometry"))
