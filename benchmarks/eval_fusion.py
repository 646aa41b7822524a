"""Particle fusion accuracy: simulated 3D nuclear pores, 2D DNA-origami grids, and the shared Nup107 particles.

    python benchmarks/eval_fusion.py            # writes benchmarks/results/eval_fusion.{json,png}
    python benchmarks/eval_fusion.py --quick    # a smoke test (fewer particles, fewer iterations)

1. **3D NPC** (issue 6 target): 200 simulated Nup96/Nup107-like pores (two 8-fold rings of radius
   53.5 nm, 50 nm apart, two sites per corner 12 nm apart), 50 % degree of labelling, 2 localizations
   per labelled site, 3 nm lateral / 9 nm axial precision (log-normal spread 0.3), uniformly random
   3D orientations. Fused with ``symmetry=8, flip=True``. Targets: >= 95 % of particles within
   5 degrees of the true pose (modulo the structure's D8 symmetry: its 8-fold rotations and the
   up/down flip that swaps its mirror-image rings), fused ring radius within 2 nm of 53.5 nm and
   ring separation within 3 nm of 50 nm. Also reported: the FSC resolution of two halves.
2. **Cost ablation**: the same kind of particles registered to the true structure with the two
   closed-form costs (per-localization likelihood vs the classical L2 overlap).
3. **2D origami** (issue 6 target): 300 simulated 3 x 4 DNA-origami grids (20 nm pitch), 30 %
   labelling, 4 localizations per labelled site, 4 nm precision, random in-plane rotations; fused
   with ``symmetry=2``. Reported: pose accuracy (modulo C2; in the frame that minimises the median
   error, and in the frame of the largest cluster, ``pose_errors(within_deg=5)``), whether every
   pair of neighbouring grid points is resolved in the fused image (dip >= 26 % between them on a 1 nm rendering, and
   each of the 12 fitted sites with its own local maximum within 5 nm, a quarter of the pitch),
   and the FRC resolution three ways: two halves of the fusion (they share its templates, which
   flatters the figure), two halves fused independently (:func:`jaxsr.fusion.gold_standard_frc`),
   and the particles placed with their true poses (the ceiling the data allow). The same again at
   DNA-PAINT-like statistics (20 localizations per site, 3 nm), the kind of data behind the
   all-to-all method's 5.0 nm at 30 % labelling (many binding events per site).
4. **Real-format data**: ``../shared/data/fusion/nup107_sim_65dol`` (200 Nup107 particles, 65 %
   labelling, no ground-truth poses): fused ring radius, separation, corner count.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np
import scipy.io
import scipy.ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxsr import fusion as F  # noqa: E402
from jaxsr.io import write_json, write_png_panel  # noqa: E402

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "fusion" / "nup107_sim_65dol"
NPC = dict(radius_nm=53.5, ring_separation_nm=50.0)


def _timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def _fused(res, particles):
    """The inlier particles' localizations in the fused frame, ``(n, d)``."""
    return res.points[np.asarray(particles.mask) & res.inliers[:, None]]


def _image(points, *, px, extent, axes=(0, 1), sigma_px=1.0):
    p = points[:, list(axes)]
    h = F.render_points_nd(p, pixel_size_nm=px, extent_nm=extent)
    return scipy.ndimage.gaussian_filter(h, sigma_px)


def npc_section(key, n, n_iter):
    k_sim, k_fuse = jax.random.split(key)
    sim = F.simulate_particles(k_sim, F.npc_sites(**NPC), n_particles=n, labelling=0.5, locs_per_site=2.0,
                               precision_nm=(3.0, 9.0))
    res, wall = _timed(F.fuse, k_fuse, sim.particles, symmetry=8, flip=True, n_iter=n_iter)
    err, _ = F.pose_errors(res.rotations, sim.rotations, group=F.symmetry_group(8, flip=True))
    err_c8, _ = F.pose_errors(res.rotations, sim.rotations, group=F.symmetry_group(8))
    inl = _fused(res, sim.particles)
    ring = F.ring_measurements(inl)
    fsc = F.fusion_frc(res.points, sim.particles.mask, pixel_size_nm=2.0)
    out = {
        "n_particles": n, "labelling": 0.5, "precision_nm": [3.0, 9.0], "locs_per_particle_mean":
            float(np.asarray(sim.particles.mask).sum(1).mean()),
        "fraction_within_5deg": float(np.mean(err < 5.0)), "median_error_deg": float(np.median(err)),
        "p90_error_deg": float(np.percentile(err, 90)),
        "fraction_within_5deg_c8_only": float(np.mean(err_c8 < 5.0)),
        "radius_nm": ring.radius_nm, "radius_true_nm": NPC["radius_nm"],
        "ring_separation_nm": ring.ring_separation_nm, "ring_separation_true_nm": NPC["ring_separation_nm"],
        "n_corners": ring.n_corners, "symmetry_contrast": ring.symmetry_contrast,
        "fsc_resolution_nm": fsc.resolution_nm if fsc.crossed else None,
        "n_inliers": int(res.inliers.sum()), "wall_s": wall, "history": res.history,
    }
    out["pass"] = {
        "pose": out["fraction_within_5deg"] >= 0.95,
        "radius": abs(ring.radius_nm - NPC["radius_nm"]) <= 2.0,
        "separation": abs(ring.ring_separation_nm - NPC["ring_separation_nm"]) <= 3.0,
    }
    imgs = [_image(inl, px=1.0, extent=80.0, axes=(0, 1)), _image(inl, px=1.0, extent=80.0, axes=(0, 2))[::-1]]
    return out, imgs


def cost_section(key, n):
    k_sim = jax.random.split(key)[0]
    sites = F.npc_sites(**NPC)
    sim = F.simulate_particles(k_sim, sites, n_particles=n, labelling=0.5, precision_nm=(3.0, 9.0))
    centred, _ = F.centre_particles(sim.particles)
    tmpl = F.GMM(sites.astype(np.float32), np.broadcast_to(0.25 * np.eye(3, dtype=np.float32), (32, 3, 3)).copy(),
                 np.full(32, 1 / 32, np.float32))
    out = {}
    for cost in F.COSTS:
        reg, wall = _timed(F.register_particles, centred, tmpl, cost=cost)
        err, _ = F.pose_errors(reg.rotations, sim.rotations, group=F.symmetry_group(8, flip=True))
        out[cost] = {"fraction_within_5deg": float(np.mean(err < 5.0)), "median_error_deg": float(np.median(err)),
                     "wall_s": wall}
    return {"n_particles": n, "template": "the true sites (sharp)", **out}


def _profile_dip(img, a, b, *, px, extent):
    """1 - (value midway) / (smaller peak) along the segment a-b (nm) of an image centred at 0."""
    t = np.linspace(0, 1, 41)
    seg = a[None] + t[:, None] * (b - a)[None]
    coords = (seg[:, ::-1] + extent) / px - 0.5           # (y, x) pixel coordinates
    vals = scipy.ndimage.map_coordinates(img, coords.T, order=1)
    peaks = min(vals[:8].max(), vals[-8:].max())
    return float(1.0 - vals[18:23].min() / peaks) if peaks > 0 else 0.0


def _fit_sites(img, sites, *, px, extent, centre):
    """The model's sites placed on the fused image: the rotation (0.5 deg steps over 180 deg, C2) and
    shift (0.5 nm steps within 8 nm of ``centre``) that maximise the image summed at the sites. Fitted to
    the image itself, not taken from the pose errors' consensus frame: under the lattice's ambiguities
    the particles' poses split into clusters and that frame can belong to a minority."""
    step = np.arange(-8.0, 8.01, 0.5)
    shifts = np.stack(np.meshgrid(step, step, indexing="ij"), -1).reshape(-1, 2) + centre
    best, placed = -np.inf, None
    for a in np.radians(np.arange(0.0, 180.0, 0.5)):
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        pos = (sites @ rot.T)[None] + shifts[:, None]                        # (K, S, 2) nm
        coords = (pos[..., ::-1].reshape(-1, 2) + extent) / px - 0.5
        score = scipy.ndimage.map_coordinates(img, coords.T, order=1).reshape(len(shifts), -1).sum(1)
        k = int(np.argmax(score))
        if score[k] > best:
            best, placed = score[k], pos[k]
    return placed


def _site_peaks(img, placed, *, px, extent, radius_nm):
    """Distance (nm) from each placed site to the image's nearest local maximum, and whether every site has
    its own maximum within ``radius_nm``. A local maximum: the largest value in its 5 x 5 pixel
    neighbourhood and above 10 % of the image's maximum. Dips between neighbouring sites alone pass a
    sheared lattice whose blobs sit near, not on, the sites."""
    peak = (img == scipy.ndimage.maximum_filter(img, size=5)) & (img > 0.1 * img.max())
    yx = np.argwhere(peak)
    xy = (yx[:, ::-1] + 0.5) * px - extent                                   # nm, the image centred at 0
    dist = np.linalg.norm(placed[:, None] - xy[None], axis=-1)              # (sites, peaks)
    nearest = dist.argmin(1)
    near = dist[np.arange(len(placed)), nearest]
    own = len(np.unique(nearest)) == len(placed)
    return near, bool(own and near.max() <= radius_nm)


# settings for sparse periodic structures (fuse's docstring): translations searched with the rotations at a
# fine blur, the previous pose refined at the finest scale, the template's site densities capped, and four
# seeds screened for two iterations each (the best-fitting one goes on)
PERIODIC = {"shifts": F.shift_grid(25.0, 5.0, dim=2), "blur_nm": (5.0, 0.0), "density_cap": 0.25, "restarts": 4}


def origami_section(key, n, n_iter, *, locs_per_site=4.0, precision_nm=4.0, fuse_kw=None, gold=True):
    k_sim, k_fuse, k_gold = jax.random.split(key, 3)
    fuse_kw = dict(fuse_kw or {})
    sites = F.origami_sites(rows=3, cols=4, pitch_nm=20.0)
    sim = F.simulate_particles(k_sim, sites, n_particles=n, labelling=0.3, locs_per_site=locs_per_site,
                               precision_nm=precision_nm)
    res, wall = _timed(F.fuse, k_fuse, sim.particles, symmetry=2, n_iter=n_iter, **fuse_kw)
    err, _ = F.pose_errors(res.rotations, sim.rotations, group=F.symmetry_group(2, dim=2))
    err_cl, _ = F.pose_errors(res.rotations, sim.rotations, group=F.symmetry_group(2, dim=2), within_deg=5.0)
    inl = _fused(res, sim.particles)
    px, extent = 1.0, 60.0
    img = _image(inl, px=px, extent=extent, sigma_px=1.5)
    model = _fit_sites(img, sites, px=px, extent=extent, centre=np.mean(inl, 0))
    dips = []
    for i in range(len(sites)):
        for j in range(i + 1, len(sites)):
            if abs(np.linalg.norm(sites[i] - sites[j]) - 20.0) < 1e-6:
                dips.append(_profile_dip(img, model[i], model[j], px=px, extent=extent))
    near, on_peaks = _site_peaks(img, model, px=px, extent=extent, radius_nm=0.25 * 20.0)
    frc = F.fusion_frc(res.points, sim.particles.mask, pixel_size_nm=1.0)
    # the same halves fused independently (no shared template), and the true poses (the ceiling)
    gold, gold_wall = _timed(F.gold_standard_frc, k_gold, sim.particles, pixel_size_nm=1.0, symmetry=2,
                             n_iter=n_iter, **fuse_kw) if gold else (None, None)
    true_r = np.swapaxes(sim.rotations, 1, 2)
    truth = F.fusion_frc(F.apply_poses(sim.particles, true_r, -np.einsum("pij,pj->pi", true_r, sim.translations)),
                         sim.particles.mask, pixel_size_nm=1.0)
    out = {
        "n_particles": n, "labelling": 0.3, "locs_per_site": locs_per_site, "precision_nm": precision_nm,
        "pitch_nm": 20.0, "locs_per_particle_mean": float(np.asarray(sim.particles.mask).sum(1).mean()),
        "fraction_within_5deg": float(np.mean(err < 5.0)), "median_error_deg": float(np.median(err)),
        "fraction_within_5deg_largest_cluster": float(np.mean(err_cl < 5.0)),
        "neighbour_pairs": len(dips), "min_dip": float(min(dips)), "median_dip": float(np.median(dips)),
        "site_to_peak_nm_max": float(near.max()), "sites_on_own_peaks": on_peaks,
        "all_grid_points_resolved": bool(min(dips) >= 0.26 and on_peaks),
        "frc_resolution_nm": frc.resolution_nm if frc.crossed else None,
        "settings": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in fuse_kw.items()}
            if fuse_kw else "defaults",
        "frc_gold_standard_nm": gold.frc.resolution_nm if gold is not None and gold.frc.crossed else None,
        "frc_true_poses_nm": truth.resolution_nm if truth.crossed else None,
        "frc_target_nm": 5.0,
        "n_inliers": int(res.inliers.sum()), "wall_s": wall, "gold_standard_wall_s": gold_wall,
        "history": res.history,
    }
    return out, img


def real_section(key, n_iter, n_max=None):
    if not DATA.is_dir():
        return {"skipped": f"{DATA} not present"}, None
    if n_max == 0:
        return {"skipped": "--shared-particles 0"}, None
    mat = scipy.io.loadmat(DATA / "particles.mat")["particles"]
    n = min(mat.shape[1], n_max or mat.shape[1])
    pts = [np.asarray(mat[0, i]["points"][0, 0], np.float64) for i in range(n)]
    sig = [np.asarray(mat[0, i]["sigma"][0, 0], np.float64) for i in range(n)]
    particles = F.make_particles(pts, sig)
    res, wall = _timed(F.fuse, key, particles, symmetry=8, flip=True, n_iter=n_iter)
    inl = _fused(res, particles)
    ring = F.ring_measurements(inl)
    model = scipy.io.loadmat(DATA / "NPCModel.mat")["NPCModel"]
    model_ring = F.ring_measurements(np.repeat(model, 2, 0))
    fsc = F.fusion_frc(res.points, particles.mask, pixel_size_nm=2.0)
    out = {
        "n_particles": particles.n_particles, "n_inliers": int(res.inliers.sum()),
        "radius_nm": ring.radius_nm, "ring_separation_nm": ring.ring_separation_nm, "n_corners": ring.n_corners,
        "symmetry_contrast": ring.symmetry_contrast,
        "model_radius_over_separation": model_ring.radius_nm / model_ring.ring_separation_nm,
        "fused_radius_over_separation": ring.radius_nm / ring.ring_separation_nm,
        "fsc_resolution_nm": fsc.resolution_nm if fsc.crossed else None,
        "wall_s": wall, "history": res.history,
    }
    return out, _image(inl, px=1.0, extent=90.0, axes=(0, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few particles and iterations (smoke test)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "eval_fusion.json"))
    ap.add_argument("--shared-particles", type=int, default=None,
                    help="fuse only the first N of the shared Nup107 particles (default: all 200; 0 skips them)")
    args = ap.parse_args(argv)
    key = jax.random.key(args.seed)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    n_npc, n_ori, n_cost, n_iter = (40, 60, 32, 2) if args.quick else (200, 300, 128, args.iterations)
    t0 = time.perf_counter()
    report = {"benchmark": "eval_fusion", "device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "cpu_count": os.cpu_count(), "quick": args.quick, "iterations": n_iter}
    print("== 1. 3D NPC fusion")
    report["npc_3d"], npc_imgs = npc_section(k1, n_npc, n_iter)
    r = report["npc_3d"]
    print(f"  within 5 deg (D8) {100 * r['fraction_within_5deg']:.1f} %  median {r['median_error_deg']:.2f} deg  "
          f"radius {r['radius_nm']:.2f} nm (true 53.5)  separation {r['ring_separation_nm']:.2f} nm (true 50)  "
          f"corners {r['n_corners']}  FSC {r['fsc_resolution_nm']}  {r['wall_s']:.0f} s  pass {r['pass']}")
    print("== 2. cost ablation (registration to the true structure)")
    report["cost_ablation"] = cost_section(k2, n_cost)
    for c in F.COSTS:
        r = report["cost_ablation"][c]
        print(f"  {c:10s} within 5 deg {100 * r['fraction_within_5deg']:.1f} %  median {r['median_error_deg']:.2f} deg")
    print("== 3. 2D origami fusion (sparse: 4 localizations per site, 4 nm; DNA-PAINT-like: 20 per site, 3 nm)")
    report["origami_2d"], ori_img = origami_section(k3, n_ori, n_iter)
    report["origami_2d_paint"], paint_img = origami_section(k3, n_ori, n_iter, locs_per_site=20.0, precision_nm=3.0,
                                                            fuse_kw=PERIODIC)
    report["origami_2d_paint_defaults"], _ = origami_section(k3, n_ori, n_iter, locs_per_site=20.0,
                                                             precision_nm=3.0, gold=False)
    for name in ("origami_2d", "origami_2d_paint", "origami_2d_paint_defaults"):
        r = report[name]
        print(f"  {name}: within 5 deg (C2) {100 * r['fraction_within_5deg']:.1f} % (of the largest cluster "
              f"{100 * r['fraction_within_5deg_largest_cluster']:.1f} %)  min dip {r['min_dip']:.2f} "
              f"sites on own peaks {r['sites_on_own_peaks']} (farthest {r['site_to_peak_nm_max']:.1f} nm) "
              f"(resolved: {r['all_grid_points_resolved']})  FRC {r['frc_resolution_nm']}  gold-standard FRC "
              f"{r['frc_gold_standard_nm']}  true poses FRC {r['frc_true_poses_nm']}  {r['wall_s']:.0f} s")
    print("== 4. shared Nup107 particles")
    report["nup107_shared"], real_img = real_section(k4, n_iter, args.shared_particles)
    r = report["nup107_shared"]
    if "skipped" not in r:
        print(f"  radius {r['radius_nm']:.2f} nm  separation {r['ring_separation_nm']:.2f} nm  corners "
              f"{r['n_corners']}  radius/separation {r['fused_radius_over_separation']:.3f} (model "
              f"{r['model_radius_over_separation']:.3f})  {r['wall_s']:.0f} s")
    report["wall_s"] = time.perf_counter() - t0
    out = Path(args.out)
    if args.quick:
        out = out.with_name(out.stem + "_quick.json")
    write_json(out, report, overwrite=True)
    images = npc_imgs + [ori_img, paint_img] + ([real_img] if real_img is not None else [])
    titles = (["NPC fused, xy", "NPC fused, xz", "origami fused (sparse)", "origami fused (PAINT-like)"]
              + (["Nup107 data, xy"] if real_img is not None else []))
    write_png_panel(out.with_suffix(".png"), images, titles=titles, size=320, overwrite=True)
    print(f"wrote {out} and {out.with_suffix('.png')} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
