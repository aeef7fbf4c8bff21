"""Transit depths: batman fit of the white light (shared geometry) and of every channel.

Input: ``{"FGS1": phase output, "AIRS-CH0": phase output}`` (planet scope); with
``fit.data: unbinned`` (default) the normalised series of the trace stage are
read through ``ctx.output_of("trace", instrument)`` and averaged into at most
``fit.max_points`` equal time bins (inverse-variance weighted, propagated
errors, the model integrated over the bin width); ``phase_binned`` fits the
phase stage's bins instead.

Model (every light curve, quadratic limb darkening, circular orbit)::

    flux(t) = baseline(t) * (1 - deficit(t)),   baseline = Legendre polynomial in time (fit.baseline_degree)

with the deficit written exactly as linear in ``beta`` (:mod:`calib_core.transit`).

1. **White light, shared geometry.**  One white curve per instrument in
   ``geometry.instruments`` (FGS1 itself; AIRS-CH0 = fixed-weight mean of its
   channels).  Non-linear parameters: the shift of t0, a/Rs and the impact
   parameter (those listed in ``geometry.free``; the period is fixed) and one
   radius ratio per curve; baseline and limb darkening are linear and
   profiled out (variable projection, ``scipy.optimize.least_squares``).  The
   errors of each curve are inflated by ``max(1, chi2_red) * beta**2`` and the
   fit repeated, so the covariance is honest.
2. **Channels.**  With the geometry fixed, every channel gets its own baseline
   and depth by least squares, batched over channels: the multiplicative model
   is solved by Gauss-Newton, including the dependence of the transit shape on
   the channel's own radius ratio (:func:`.channels.solve_depths`), so the estimate is
   the least-squares optimum and its covariance includes that dependence.
   Baseline: the terms up to ``fit.baseline_free_degree`` (constant, slope)
   are free per channel; the higher ones (the quadratic of a slow drift) are
   shared by the channels with coefficients smooth in wavenumber (Legendre
   degree ``fit.baseline_smooth_degree``), fitted jointly with every channel
   (:mod:`.shared_baseline`; the depth covariance is marginal over
   them).  A free quadratic per channel is nearly degenerate with the transit
   and costs a factor ~1.5 in every depth's error; the free degree is raised
   to the trace stage's ``along_time`` degree (:func:`.channels.channel_free_degree`),
   whose per-channel coefficients must stay free to be accounted for.
   Limb darkening (``limb_darkening.method``):

   * ``smooth`` (default): u1, u2 are Legendre polynomials of degree
     ``limb_darkening.degree`` in wavenumber (1/lambda) across the instrument's
     channels, fitted jointly to all channels (the total chi^2 with every
     channel's baseline and depth profiled out, minimised over the
     2 (degree + 1) coefficients); each channel then has one linear depth.
     Limb darkening varies smoothly and roughly linearly in 1/lambda, so this
     removes the depth / limb-darkening degeneracy of single channels without
     the bias of a fixed guess.  With no more usable channels than law
     coefficients (FGS1: one channel) every channel fits its own u1, u2
     freely (mode ``free``: the three ``beta``, no prior).
   * ``fit``: the three ``beta`` of each channel are free, with Gaussian priors
     ``N(u1, prior_sigma)``, ``N(u2, prior_sigma)`` (linearised on the ratios); the
     depth error includes the limb-darkening degeneracy.
   * ``fixed``: u1, u2 from the config for every channel (biased when the
     true limb darkening differs; for tests and comparisons).
3. **Errors.**  Per channel the statistical variance is scaled by
   ``max(1, chi2_red)`` (``errors.scale_by_chi2``) and by ``beta**2``, the
   time-averaging red-noise factor (``errors.red_noise``: per channel, or the
   median of the instrument's channels, which is far less noisy); with
   ``errors.include_geometry`` the geometry part of the white-light depth
   variance (marginal minus conditional, relative) is added as
   ``depth**2 * relative variance``, so every depth carries the common-mode
   error of the shared geometry.  A channel without usable data (e.g. flagged
   for the whole visit) is interpolated from its neighbours with a
   conservative error (:func:`.uncertainties.fill_missing`, output ``filled``).
4. **Noise limit.**  ``sigma_noise_limit``: the photon + read-noise limit of
   each depth computed from the data, i.e. the Fisher information of the
   curve's own inverse variances (the per-sample variances carried through
   the chain) for the fitted transit shape with a constant baseline
   (:func:`.noise_limit.depth_noise_limit`); the metrics give
   ``sigma / sigma_noise_limit``.

Output (planet scope, 283 rows = FGS1 then AIRS-CH0 by ascending wavelength, as
``wavelengths.csv``): ``mu``, ``sigma`` ((Rp/Rs)^2 and 1-sigma), ``wavelength_um``,
``u1``, ``u2``, ``chi2_red``, ``beta``, ``instrument`` (index into ``meta["instruments"]``),
``white_weight``, ``filled``, ``sigma_noise_limit``, and small white-light arrays for plots
(``white_time_h``, ``white_flux``, ``white_err``, ``white_model``: one row per
instrument of ``meta["white_instruments"]``).

``step.py`` is the stage adapter (inputs, calls, QC gates, plot data); the
algorithms are in the modules beside it: ``curves`` (light curves, white light, baseline
design), ``linear`` (batched multiplicative least squares), ``white`` (shared
geometry), ``limb_darkening`` (smooth law, priors), ``templates`` (transit
templates, shape depth), ``shared_baseline`` (baseline terms shared across
channels), ``channels`` (per-channel depths), ``noise_limit`` (photon +
read-noise limit), ``uncertainties`` (final errors, filled channels) and
``metrics`` (noise-limit and truth metrics).
"""

from ..info import StageInfo

INFO = StageInfo("depths", "Transit depths", scope="planet", input_kind="series", output_kind="series",
                 default_io=("phase_fold", "depths"),
                 reads_outputs=("trace",),   # fit.data: unbinned fits the trace series
                 # the baseline terms trace fitted per channel stay free per channel here
                 reads_config=("trace.enabled", "trace.along_time"))
