"""resolve_line_pairs against the closed-form two-Gaussian dip criterion."""

from __future__ import annotations

import numpy as np
import pytest

from jaxsr.metrics import resolve_line_pairs

PIXEL = 5.0
SIGMA = 40.0  # Gaussian blur of each line, nm
D_STAR = 2.79 * SIGMA  # separation where two equal Gaussians dip by 26 % (closed form, ~111.6 nm)


def target(seps, *, noise_rng=None):
    """Lines along y, Gaussian cross-section, pairs 600 nm apart; returns image and polylines (nm)."""
    xs = []
    x = 400.0
    for s in seps:
        xs += [x, x + s]
        x += s + 600.0
    width = int((x + 400.0) / PIXEL)
    xc = (np.arange(width) + 0.5) * PIXEL
    profile = sum(np.exp(-0.5 * ((xc - xi) / SIGMA) ** 2) for xi in xs)
    img = 100.0 * np.tile(profile, (80, 1)) + 10.0
    if noise_rng is not None:
        img = noise_rng.poisson(img).astype(float)
    lines = np.array([[[50.0, xi], [350.0, xi]] for xi in xs])
    return img, lines


def test_verdict_flips_at_closed_form_separation():
    seps = [0.8 * D_STAR, 0.95 * D_STAR, 1.05 * D_STAR, 1.3 * D_STAR, 2.0 * D_STAR]
    img, lines = target(seps)
    res = resolve_line_pairs(img, lines, pixel_size_nm=PIXEL)
    assert [r.resolved for r in res] == [False, False, True, True, True]
    for r in res[2:]:
        assert r.measured_separation_nm == pytest.approx(r.true_separation_nm, rel=0.01)
        assert r.true_separation_nm == pytest.approx(seps[res.index(r)])


def test_noisy_target(rng):
    img, lines = target([0.6 * D_STAR, 1.6 * D_STAR], noise_rng=rng)
    res = resolve_line_pairs(img, lines, pixel_size_nm=PIXEL)
    assert not res[0].resolved and res[1].resolved
    assert res[1].measured_separation_nm == pytest.approx(1.6 * D_STAR, rel=0.03)


def test_bad_input():
    img, lines = target([200.0])
    with pytest.raises(ValueError, match="lines_nm"):
        resolve_line_pairs(img, lines[:1], pixel_size_nm=PIXEL)
    with pytest.raises(ValueError, match="lines_nm"):
        resolve_line_pairs(img, lines + [0.0, 1e5], pixel_size_nm=PIXEL)
    with pytest.raises(ValueError, match="image"):
        resolve_line_pairs(img[0], lines, pixel_size_nm=PIXEL)
    with pytest.raises(ValueError, match="pixel_size_nm"):
        resolve_line_pairs(img, lines, pixel_size_nm=0.0)
    bad = img.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="image"):
        resolve_line_pairs(bad, lines, pixel_size_nm=PIXEL)
