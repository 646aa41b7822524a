"""Held-out evaluation structures: Voronoi tubular networks and hollow rings (geometry, statistics, errors)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsr.simulate import hollow_rings, render_polyline, tubular_network


def edge_lengths(net):
    net = np.asarray(net, dtype=np.float64)
    return np.linalg.norm(np.diff(net, axis=1), axis=-1).sum(axis=1)


# --------------------------------------------------------------------------- tubular_network
def test_network_shape_dtype_and_inside_field(key):
    h, w = 5000.0, 3000.0
    net = tubular_network(key, field_nm=(h, w), mean_spacing_nm=700.0, bend_nm=150.0, points_per_edge=6)
    assert net.dtype == jnp.float32 and net.ndim == 3 and net.shape[1:] == (6, 2) and net.shape[0] > 10
    pts = np.asarray(net)
    assert np.all(pts[..., 0] >= 0) and np.all(pts[..., 0] <= h)
    assert np.all(pts[..., 1] >= 0) and np.all(pts[..., 1] <= w)


def test_network_float64_under_x64(x64, key):
    net = tubular_network(key, field_nm=(2000.0, 2000.0), mean_spacing_nm=500.0)
    assert net.dtype == jnp.float64


@pytest.mark.parametrize("prune", [0.0, 0.3])
def test_network_length_per_area_matches_poisson_voronoi(prune):
    # Poisson-Voronoi: expected edge length per unit area 2 sqrt(rho) = 2 / s (Meijering 1953);
    # independent pruning keeps a fraction (1 - prune) of it. Clipping to the field keeps the
    # length inside it exactly, so the ratio below is unbiased; tolerance 5 standard errors.
    s, side = 1000.0, 15000.0
    ratios = []
    for i in range(12):
        net = tubular_network(jax.random.key(100 + i), field_nm=(side, side), mean_spacing_nm=s,
                              prune_fraction=prune, points_per_edge=2)
        ratios.append(edge_lengths(net).sum() / (2 * side * side / s * (1 - prune)))
    ratios = np.asarray(ratios)
    se = ratios.std(ddof=1) / np.sqrt(ratios.size)
    assert abs(ratios.mean() - 1.0) <= 5 * se
    assert abs(ratios.mean() - 1.0) < 0.03


def test_network_junctions_have_degree_three_and_network_is_connected():
    s, side = 800.0, 10000.0
    net = np.asarray(tubular_network(jax.random.key(7), field_nm=(side, side), mean_spacing_nm=s,
                                     points_per_edge=2), dtype=np.float64)
    ends = net[:, [0, -1]].reshape(-1, 2)
    ids = {}
    labels = np.array([ids.setdefault(tuple(np.round(p, 2)), len(ids)) for p in ends])
    on_border = np.any((ends < 1e-3) | (ends > side - 1e-3), axis=1)
    degree = np.bincount(labels)
    interior = np.unique(labels[~on_border])
    assert np.all(degree[interior] == 3)  # Voronoi vertices in the plane are three-way junctions
    # Vertex density of the Poisson-Voronoi tessellation is 2 rho (Poisson count, 5 sigma).
    expected = 2 * side * side / s**2
    assert abs(interior.size - expected) <= 5 * np.sqrt(expected)
    # Union-find over the edges: the largest component carries almost all of the length.
    parent = np.arange(len(ids))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in labels.reshape(-1, 2):
        parent[find(a)] = find(b)
    roots = np.array([find(a) for a in labels[::2]])
    lengths = edge_lengths(net)
    per_root = {r: lengths[roots == r].sum() for r in np.unique(roots)}
    assert max(per_root.values()) >= 0.97 * lengths.sum()


def test_network_bend_keeps_junctions_and_bounds_the_bow(x64, key):
    kw = dict(field_nm=(6000.0, 6000.0), mean_spacing_nm=900.0, points_per_edge=9)
    straight = np.asarray(tubular_network(key, **kw))
    bent = np.asarray(tubular_network(key, bend_nm=120.0, **kw))
    assert straight.shape == bent.shape
    np.testing.assert_allclose(bent[:, [0, -1]], straight[:, [0, -1]], atol=1e-9)
    bow = np.linalg.norm(bent[:, 4] - straight[:, 4], axis=-1)  # the middle vertex moves by |b|
    assert bow.max() <= 120.0 + 1e-9 and bow.max() > 100.0
    # The bow is perpendicular to the edge.
    d = straight[:, -1] - straight[:, 0]
    inside = np.all((bent[:, 4] > 0) & (bent[:, 4] < 6000.0), axis=1)
    cosines = np.abs(np.sum((bent[:, 4] - straight[:, 4]) * d, axis=1)) / (np.linalg.norm(d, axis=1) * bow + 1e-12)
    assert np.all(cosines[inside & (bow > 1.0)] < 1e-6)


def test_network_renders_with_its_contour_length(key):
    net = tubular_network(key, field_nm=(1950.0, 1950.0), mean_spacing_nm=600.0, bend_nm=50.0)
    img = render_polyline(net, shape=(30, 30), pixel_size_nm=65.0, photons_per_nm=1.0)
    np.testing.assert_allclose(float(img.sum()), edge_lengths(net).sum(), rtol=1e-4)


def test_network_deterministic_from_key(key):
    kw = dict(field_nm=(3000.0, 3000.0), mean_spacing_nm=700.0, prune_fraction=0.2, bend_nm=80.0)
    a = tubular_network(key, **kw)
    b = tubular_network(key, **kw)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    c = tubular_network(jax.random.fold_in(key, 1), **kw)
    assert a.shape != c.shape or not np.array_equal(np.asarray(a), np.asarray(c))


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        (dict(field_nm=(-1.0, 100.0)), ValueError, "field_nm"),
        (dict(field_nm=(100.0,)), ValueError, "field_nm"),
        (dict(field_nm="big"), TypeError, "field_nm"),
        (dict(field_nm=(1000.0, 1000.0), mean_spacing_nm=0.0), ValueError, "mean_spacing_nm"),
        (dict(field_nm=(1000.0, 1000.0), prune_fraction=1.0), ValueError, "prune_fraction"),
        (dict(field_nm=(1000.0, 1000.0), prune_fraction=float("nan")), ValueError, "prune_fraction"),
        (dict(field_nm=(1000.0, 1000.0), bend_nm=-1.0), ValueError, "bend_nm"),
        (dict(field_nm=(1000.0, 1000.0), points_per_edge=1), ValueError, "points_per_edge"),
        (dict(field_nm=(1000.0, 1000.0), points_per_edge=2.5), TypeError, "points_per_edge"),
        (dict(field_nm=(10.0, 10.0), mean_spacing_nm=1000.0, prune_fraction=0.999), ValueError, "prune_fraction"),
    ],
)
def test_network_bad_input(key, kwargs, error, word):
    with pytest.raises(error, match=word):
        tubular_network(key, **kwargs)


def test_network_bad_key():
    with pytest.raises(TypeError, match="key"):
        tubular_network("seed", field_nm=(1000.0, 1000.0))


# --------------------------------------------------------------------------- hollow_rings
def ring_geometry(rings):
    r = np.asarray(rings, dtype=np.float64)
    centres = r[:, :-1].mean(axis=1)  # the regular polygon's vertex mean is the circle centre
    radii = np.linalg.norm(r[:, :-1] - centres[:, None], axis=-1)
    return r, centres, radii


def test_rings_radii_in_range_inside_field_and_apart(x64, key):
    h, w = 6000.0, 9000.0
    rings, centres, radii = ring_geometry(
        hollow_rings(key, n=25, field_nm=(h, w), diameter_nm=(200.0, 800.0), min_gap_nm=150.0))
    assert rings.shape == (25, 65, 2)
    np.testing.assert_allclose(radii, np.broadcast_to(radii[:, :1], radii.shape), rtol=1e-12)  # every vertex on one circle
    assert np.all(radii >= 100.0) and np.all(radii <= 400.0)
    assert np.all(rings[..., 0] >= 0) and np.all(rings[..., 0] <= h)
    assert np.all(rings[..., 1] >= 0) and np.all(rings[..., 1] <= w)
    np.testing.assert_array_equal(rings[:, 0], rings[:, -1])  # closed
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    r = radii[:, 0]
    gaps = dist - r[:, None] - r[None]
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() >= 150.0 - 1e-9


def test_ring_diameters_are_uniform(key):
    # 300 small rings in a large field: the placement never rejects on size, so the diameters are
    # i.i.d. uniform on the range; Kolmogorov-Smirnov at p > 1e-3.
    rings, _, radii = ring_geometry(hollow_rings(key, n=300, field_nm=(1e5, 1e5), diameter_nm=(200.0, 800.0)))
    d = 2 * radii[:, 0]
    assert stats.kstest(d, stats.uniform(loc=200.0, scale=600.0).cdf).pvalue > 1e-3


def test_rings_render_with_their_perimeter(key):
    rings = hollow_rings(key, n=4, field_nm=(3900.0, 3900.0), diameter_nm=(300.0, 600.0), points_per_ring=128)
    img = render_polyline(rings, shape=(60, 60), pixel_size_nm=65.0, photons_per_nm=1.0)
    _, _, radii = ring_geometry(rings)
    perimeter = 2 * 128 * radii[:, 0] * np.sin(np.pi / 128)  # the inscribed polygon
    np.testing.assert_allclose(float(img.sum()), perimeter.sum(), rtol=1e-4)
    # Hollow: the pixel at a ring centre holds nothing.
    _, centres, _ = ring_geometry(rings)
    iy, ix = (centres // 65.0).astype(int).T
    assert float(img[iy, ix].max()) == 0.0


def test_rings_deterministic_from_key(key):
    a = hollow_rings(key, n=5, field_nm=(4000.0, 4000.0))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(hollow_rings(key, n=5, field_nm=(4000.0, 4000.0))))
    b = hollow_rings(jax.random.fold_in(key, 3), n=5, field_nm=(4000.0, 4000.0))
    assert not np.array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        (dict(n=0), ValueError, "'n'"),
        (dict(n=2.0), TypeError, "'n'"),
        (dict(n=2, field_nm=(0.0, 1000.0)), ValueError, "field_nm"),
        (dict(n=2, diameter_nm=(500.0, 200.0)), ValueError, "diameter_nm"),
        (dict(n=2, diameter_nm=(-5.0, 200.0)), ValueError, "diameter_nm"),
        (dict(n=2, diameter_nm=(200.0, 5000.0)), ValueError, "diameter_nm"),
        (dict(n=2, min_gap_nm=-1.0), ValueError, "min_gap_nm"),
        (dict(n=2, points_per_ring=4), ValueError, "points_per_ring"),
        (dict(n=200), ValueError, "'n'"),  # 200 rings of >= 200 nm do not fit 2 x 2 um
    ],
)
def test_rings_bad_input(key, kwargs, error, word):
    kwargs = {"field_nm": (2000.0, 2000.0), **kwargs}
    with pytest.raises(error, match=word):
        hollow_rings(key, **kwargs)
