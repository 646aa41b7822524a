"""jaxsr: differentiable super-resolution fluorescence microscopy in JAX.

Subpackages (each also importable on its own):

- :mod:`jaxsr.optics`: PSF models (Gaussian, Airy/Bessel, pupil + Zernike, astigmatic), OTFs, PSF fitting.
- :mod:`jaxsr.forward`: image formation: convolution, binning, background, camera noise.
- :mod:`jaxsr.simulate`: synthetic structures in nm and ready-made widefield datasets.
- :mod:`jaxsr.deconv`: Richardson-Lucy, upsampling, 3S denoising, the CLID pipeline, sparse deconvolution.
- :mod:`jaxsr.metrics`: PSNR/SSIM, FWHM and two-peak verdicts, FRC and decorrelation.
- :mod:`jaxsr.io`: TIFF/OME-TIFF with pixel sizes, atomic writes.
- :mod:`jaxsr.nn`: Flax networks: the U-Net, 3Snet, DPS, self-supervised denoising, training, model files
  (used qualified, ``jaxsr.nn.denoise``; not re-exported at the top level).
- :mod:`jaxsr.smlm`: single-molecule localization: simulation, detection, MLE fitting with CRLB,
  SMLM Challenge evaluation (used qualified, ``jaxsr.smlm.localize``).
- :mod:`jaxsr.fusion`: particle fusion: Gaussian-mixture particles, SO(3) registration, dynamic-template
  fusion, FSC (used qualified, ``jaxsr.fusion.fuse``).
- :mod:`jaxsr.parallel`: scale-out: items sharded over devices, one image across devices (halo
  exchange), data larger than memory (Dask + Zarr) (used qualified, ``jaxsr.parallel.sharded_vmap``).

Every public name of the other subpackages is also available at the top level, e.g. ``jaxsr.airy_psf_2d``.
"""

from jaxsr import deconv, forward, fusion, io, metrics, nn, optics, parallel, simulate, smlm
from jaxsr._version import __version__
from jaxsr.deconv import (
    BACKGROUNDS,
    CLID_PSF_MODELS,
    GradientConsensusStop,
    LikelihoodPlateauStop,
    RelativeChangeStop,
    RLHistory,
    bicubic_upsample,
    clid,
    clid_psf,
    estimate_background,
    fourier_upsample,
    lanczos_upsample,
    resample_psf,
    richardson_lucy,
    series_average,
    series_median,
    sparse_deconvolution,
    sparse_hessian_reconstruction,
    three_s_denoise,
)
from jaxsr.forward import (
    CameraModel,
    adu_variance,
    apply_camera,
    bin_image,
    camera_preset,
    convolve,
    expected_adu,
    expected_image,
    form_image,
    photons_from_adu,
    poisson_noise,
)
from jaxsr.io import ImageMetadata, atomic_path, read_image, write_image, write_json, write_png_panel
from jaxsr.metrics import (
    DecorrelationResult,
    FRCResult,
    FWHMResult,
    LinePairResult,
    TwoPeakResult,
    decorrelation,
    frc,
    frc_single,
    fwhm,
    line_profile,
    psnr,
    resolve_line_pairs,
    ssim,
    two_peak_separation,
)
from jaxsr.optics import (
    PSF_MODELS,
    PSFFitResult,
    airy_kernel,
    airy_psf_2d,
    astigmatic_psf_3d,
    astigmatic_sigma,
    bessel_j0,
    bessel_j1,
    centre_pad_psf,
    clid_bessel_psf,
    fit_psf,
    gaussian_psf_2d,
    gaussian_psf_3d,
    noll_to_nm,
    otf_to_psf,
    psf_to_otf,
    pupil_psf_3d,
    zernike,
    zernike_basis,
)
from jaxsr.simulate import (
    STRUCTURES,
    RSFPSeries,
    WidefieldSimulation,
    bead_pairs,
    filaments,
    hollow_rings,
    tubular_network,
    line_pairs,
    random_beads,
    render_points,
    render_polyline,
    ring,
    rsfp_background,
    simulate_rsfp_series,
    simulate_widefield,
    widefield_psf,
)

__all__ = [
    "__version__",
    # subpackages
    "deconv",
    "forward",
    "fusion",
    "io",
    "metrics",
    "nn",
    "optics",
    "parallel",
    "simulate",
    # optics
    "bessel_j0",
    "bessel_j1",
    "airy_kernel",
    "noll_to_nm",
    "zernike",
    "zernike_basis",
    "gaussian_psf_2d",
    "gaussian_psf_3d",
    "airy_psf_2d",
    "clid_bessel_psf",
    "pupil_psf_3d",
    "astigmatic_sigma",
    "astigmatic_psf_3d",
    "psf_to_otf",
    "otf_to_psf",
    "centre_pad_psf",
    "fit_psf",
    "PSFFitResult",
    "PSF_MODELS",
    # forward
    "convolve",
    "bin_image",
    "CameraModel",
    "camera_preset",
    "expected_adu",
    "adu_variance",
    "photons_from_adu",
    "poisson_noise",
    "apply_camera",
    "expected_image",
    "form_image",
    # simulate
    "filaments",
    "hollow_rings",
    "tubular_network",
    "line_pairs",
    "bead_pairs",
    "ring",
    "random_beads",
    "render_points",
    "render_polyline",
    "simulate_widefield",
    "widefield_psf",
    "WidefieldSimulation",
    "STRUCTURES",
    "simulate_rsfp_series",
    "rsfp_background",
    "RSFPSeries",
    # deconv
    "richardson_lucy",
    "estimate_background",
    "RLHistory",
    "RelativeChangeStop",
    "LikelihoodPlateauStop",
    "GradientConsensusStop",
    "resample_psf",
    "lanczos_upsample",
    "bicubic_upsample",
    "fourier_upsample",
    "three_s_denoise",
    "series_average",
    "series_median",
    "clid",
    "clid_psf",
    "CLID_PSF_MODELS",
    "sparse_deconvolution",
    "sparse_hessian_reconstruction",
    "BACKGROUNDS",
    # metrics
    "psnr",
    "ssim",
    "fwhm",
    "FWHMResult",
    "two_peak_separation",
    "TwoPeakResult",
    "line_profile",
    "resolve_line_pairs",
    "LinePairResult",
    "frc",
    "frc_single",
    "FRCResult",
    "decorrelation",
    "DecorrelationResult",
    # io
    "read_image",
    "write_image",
    "ImageMetadata",
    "atomic_path",
    "write_json",
    "write_png_panel",
]
