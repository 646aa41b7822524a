"""Deconvolution and the CLID super-resolution pipeline.

Richardson-Lucy (:mod:`~jaxsr.deconv.richardson_lucy`), PSF resampling to the
image grid (:mod:`~jaxsr.deconv.psf_resample`), Lanczos/bicubic/Fourier
upsampling (:mod:`~jaxsr.deconv.upsample`), 3S denoising of RSFP ON/OFF series
(:mod:`~jaxsr.deconv.three_s`), the CLID pipeline (:mod:`~jaxsr.deconv.clid`,
Xue et al., Nat Commun 2026) and the sparse-deconvolution baseline
(:mod:`~jaxsr.deconv.sparse`, Zhao et al., Nat Biotechnol 2022).
Axis order ``(..., y, x)`` / ``(..., z, y, x)``; PSF centre at index ``n // 2``.
"""

from jaxsr.deconv.background import estimate_background
from jaxsr.deconv.clid import CLID_PSF_MODELS, clid, clid_psf
from jaxsr.deconv.psf_resample import resample_psf
from jaxsr.deconv.richardson_lucy import (
    GradientConsensusStop,
    LikelihoodPlateauStop,
    RelativeChangeStop,
    RLHistory,
    richardson_lucy,
)
from jaxsr.deconv.sparse import BACKGROUNDS, sparse_deconvolution, sparse_hessian_reconstruction
from jaxsr.deconv.three_s import series_average, series_median, three_s_denoise
from jaxsr.deconv.upsample import bicubic_upsample, fourier_upsample, lanczos_upsample

__all__ = [
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
]
