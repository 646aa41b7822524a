"""Image metrics: quality (PSNR, SSIM), line profiles (FWHM, two-peak), resolution (FRC, decorrelation)."""

from jaxsr.metrics.line_pairs import LinePairResult, resolve_line_pairs
from jaxsr.metrics.profile import FWHMResult, TwoPeakResult, fwhm, line_profile, two_peak_separation
from jaxsr.metrics.quality import psnr, ssim
from jaxsr.metrics.resolution import DecorrelationResult, FRCResult, decorrelation, frc, frc_single

__all__ = [
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
]
