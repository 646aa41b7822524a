"""PSF models and PSF/OTF conversion.

Bessel functions and the Airy kernel (:mod:`~jaxsr.optics.bessel`), Zernike
polynomials (:mod:`~jaxsr.optics.zernike`), PSF models on pixel grids
(:mod:`~jaxsr.optics.psf`) and PSF <-> OTF conversion
(:mod:`~jaxsr.optics.otf`). Axis order ``(y, x)`` / ``(z, y, x)``, lengths in
nm, PSF centre at index ``n // 2`` on every axis.
"""

from jaxsr.optics.clid_bessel import clid_bessel_psf
from jaxsr.optics.bessel import airy_kernel, bessel_j0, bessel_j1
from jaxsr.optics.fit import PSF_MODELS, PSFFitResult, fit_psf
from jaxsr.optics.otf import centre_pad_psf, otf_to_psf, psf_to_otf
from jaxsr.optics.psf import (
    airy_psf_2d,
    astigmatic_psf_3d,
    astigmatic_sigma,
    gaussian_psf_2d,
    gaussian_psf_3d,
    pupil_psf_3d,
)
from jaxsr.optics.zernike import noll_to_nm, zernike, zernike_basis

__all__ = [
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
    "fit_psf",
    "PSFFitResult",
    "PSF_MODELS",
    "otf_to_psf",
    "centre_pad_psf",
]
