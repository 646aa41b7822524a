"""Fourier shell correlation: ``frc`` on 3-D volumes ``(z, y, x)``.

Reference: an FSC written out here shell by shell (scipy FFT, window built as
sin^2, a boolean mask per shell), not through the module's helpers. Property:
for a white random object blurred by a Gaussian of sigma ``s`` pixels plus
independent white noise of standard deviation ``sigma_n`` in each volume, the
spectral SNR is ``exp(-4 pi^2 s^2 f^2) / sigma_n^2`` and E[FSC] = SNR / (1 + SNR),
so the 1/7 crossing (SNR = 1/6) is at ``f = sqrt(ln(6 / sigma_n^2)) / (2 pi s)``:
the resolution is proportional to the blur.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsr.metrics import FRCResult, frc


def reference_fsc(a, b, *, apodize):
    """FSC by an explicit loop over shells; returns (curve, voxels per shell)."""
    n = min(a.shape)
    crop = tuple(slice((s - n) // 2, (s - n) // 2 + n) for s in a.shape)
    a, b = a[crop], b[crop]
    a, b = a - a.mean(), b - b.mean()
    if apodize:
        h = np.sin(np.pi * np.arange(n) / n) ** 2  # periodic Hann
        w = np.einsum("i,j,k->ijk", h, h, h)
        a, b = a * w, b * w
    fa = scipy.fft.fftshift(scipy.fft.fftn(a))
    fb = scipy.fft.fftshift(scipy.fft.fftn(b))
    k = np.arange(n) - n // 2  # fftshift order
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    shell = np.round(np.sqrt(kz**2 + ky**2 + kx**2))
    curve, counts = [], []
    for i in range(n // 2 + 1):
        m = shell == i
        num = np.sum(fa[m] * np.conj(fb[m])).real
        den = np.sqrt(np.sum(np.abs(fa[m]) ** 2) * np.sum(np.abs(fb[m]) ** 2))
        curve.append(num / den if den > 0 else 0.0)
        counts.append(int(m.sum()))
    return np.array(curve), np.array(counts, dtype=float)


def blurred_pair(seed, sigma_px, *, n=32, noise=0.1):
    """White random object blurred (periodically) by a Gaussian, two noise realisations."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(n)
    f2 = f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2
    spectrum = np.fft.fftn(rng.standard_normal((n, n, n)))
    noise1 = noise * rng.standard_normal((n, n, n))
    noise2 = noise * rng.standard_normal((n, n, n))

    def pair(s):
        img = np.fft.ifftn(spectrum * np.exp(-2.0 * np.pi**2 * s**2 * f2)).real
        return img + noise1, img + noise2

    return [pair(s) for s in sigma_px]


# ------------------------------------------------------------------ reference
@pytest.mark.parametrize("shape", [(32, 32, 32), (24, 30, 27), (17, 16, 20)])
@pytest.mark.parametrize("apodize", [True, False])
def test_fsc_matches_shell_loop_reference(rng, shape, apodize):
    signal = rng.random(shape)
    a = signal + 0.5 * rng.standard_normal(shape)
    b = signal + 0.5 * rng.standard_normal(shape)
    want, counts = reference_fsc(a, b, apodize=apodize)
    r = frc(a, b, pixel_size_nm=4.0, threshold="half-bit", apodize=apodize)
    assert isinstance(r, FRCResult)
    n = min(shape)
    assert r.curve.shape == r.frequencies.shape == r.threshold_curve.shape == (n // 2 + 1,)
    np.testing.assert_allclose(r.curve, want, atol=1e-6)
    half_bit = (0.2071 + 1.9102 / np.sqrt(counts)) / (1.2071 + 0.9102 / np.sqrt(counts))
    np.testing.assert_allclose(r.threshold_curve, half_bit, rtol=1e-12)
    np.testing.assert_allclose(r.frequencies, np.arange(n // 2 + 1) / (n * 4.0))
    # 1/7 threshold: same curve, flat threshold.
    r7 = frc(a, b, pixel_size_nm=4.0, apodize=apodize)
    np.testing.assert_array_equal(r7.curve, r.curve)
    np.testing.assert_array_equal(r7.threshold_curve, np.full(n // 2 + 1, 1.0 / 7.0))


def test_fsc_shell_voxel_counts():
    """Shells 1 and 2 hold the voxels with |k|^2 in {1, 2} and {3, ..., 6}: 18 and 62."""
    a = np.random.default_rng(1).random((16, 16, 16))
    _, counts = reference_fsc(a, a, apodize=False)
    assert counts[:3].tolist() == [1, 18, 62]
    r = frc(a, a, pixel_size_nm=1.0, threshold="half-bit")
    root = np.sqrt(counts)
    np.testing.assert_allclose(r.threshold_curve, (0.2071 + 1.9102 / root) / (1.2071 + 0.9102 / root))


# ----------------------------------------------------------------- identical
@pytest.mark.parametrize("threshold", ["1/7", "half-bit"])
@pytest.mark.parametrize("apodize", [True, False])
def test_fsc_identical_volumes_never_cross(rng, threshold, apodize):
    a = rng.random((32, 32, 32))
    r = frc(a, a, pixel_size_nm=5.0, threshold=threshold, apodize=apodize)
    assert not r.crossed
    assert np.isnan(r.resolution_nm) and np.isnan(r.crossing_frequency)
    np.testing.assert_allclose(r.curve[1:], 1.0, atol=1e-12)


# ------------------------------------------------------------------ property
@settings(max_examples=8)
@given(seed=st.integers(0, 2**32 - 1), threshold=st.sampled_from(["1/7", "half-bit"]))
def test_fsc_resolution_tracks_the_blur(seed, threshold):
    """Smaller blur -> finer FSC resolution (monotone), close to the SNR prediction."""
    sigmas = (1.0, 1.5, 2.0, 3.0)
    noise = 0.1
    res = np.array(
        [frc(a, b, pixel_size_nm=1.0, threshold=threshold).resolution_nm for a, b in blurred_pair(seed, sigmas)]
    )
    assert np.all(np.isfinite(res))
    assert np.all(np.diff(res) > 0), res
    predicted = 2.0 * np.pi * np.array(sigmas) / np.sqrt(np.log(6.0 / noise**2))  # ~1.85 sigma
    # Over 300 seeds the ratio stayed within [0.58, 1.15] (3-D Hann window, shell noise).
    assert np.all((res / predicted > 0.5) & (res / predicted < 1.5)), res / predicted
    # In units of the blur: between 1 and 3 sigma (0.4-1.3 FWHM).
    assert np.all((res > 1.0 * np.array(sigmas)) & (res < 3.0 * np.array(sigmas))), res


def test_fsc_noise_free_blurred_pair_does_not_cross():
    (a, b), = blurred_pair(0, (1.5,), noise=0.0)
    assert not frc(a, b, pixel_size_nm=1.0).crossed


# ---------------------------------------------------------------- invariance
def test_fsc_invariant_to_swap_affine_axes_and_units(rng):
    obj = rng.random((32, 32, 32)) * 10
    a = obj + rng.standard_normal(obj.shape)
    b = obj + rng.standard_normal(obj.shape)
    base = frc(a, b, pixel_size_nm=1.0)
    np.testing.assert_allclose(frc(b, a, pixel_size_nm=1.0).curve, base.curve, atol=1e-12)
    np.testing.assert_allclose(frc(3.0 * a - 7.0, b, pixel_size_nm=1.0).curve, base.curve, atol=1e-9)
    perm = (2, 0, 1)
    np.testing.assert_allclose(
        frc(a.transpose(perm), b.transpose(perm), pixel_size_nm=1.0).curve, base.curve, atol=1e-9
    )
    scaled = frc(a, b, pixel_size_nm=7.5)
    np.testing.assert_allclose(scaled.frequencies * 7.5, base.frequencies)
    if base.crossed:
        assert scaled.resolution_nm == pytest.approx(7.5 * base.resolution_nm, rel=1e-12)


def test_fsc_non_cubic_is_cropped_to_centre(rng):
    a, b = rng.random((36, 32, 40)), rng.random((36, 32, 40))
    r = frc(a, b, pixel_size_nm=1.0)
    r_cube = frc(a[2:34, :, 4:36], b[2:34, :, 4:36], pixel_size_nm=1.0)
    np.testing.assert_allclose(r.curve, r_cube.curve, atol=1e-12)


# ----------------------------------------------------------------- bad input
def test_fsc_bad_input(rng):
    v = rng.random((16, 16, 16))
    with pytest.raises(ValueError, match="image1.*expected 2 or 3 dimensions"):
        frc(rng.random((2, 16, 16, 16)), rng.random((2, 16, 16, 16)), pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="image2.*expected 2 or 3 dimensions"):
        frc(v, rng.random((2, 16, 16, 16)), pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="image1.*expected 2 or 3 dimensions"):
        frc(v[0, 0], v[0, 0], pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="image2.*does not match"):
        frc(v, v[:, :, :15], pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="image2.*does not match"):
        frc(v, v[0], pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="image1.*8 x 8 x 8"):
        frc(v[:6], v[:6], pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="image2.*constant"):
        frc(v, np.ones_like(v), pixel_size_nm=1.0)
    nan = v.copy()
    nan[3, 4, 5] = np.nan
    with pytest.raises(ValueError, match="image1"):
        frc(nan, v, pixel_size_nm=1.0)
    with pytest.raises(TypeError, match="image2"):
        frc(v, v + 1j, pixel_size_nm=1.0)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        frc(v, v, pixel_size_nm=(1.0, 1.0, 1.0))  # cubic voxels: one size only
