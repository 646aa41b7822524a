"""PSF-fitting recovery benchmark: does `jaxsr.optics.fit_psf` recover known truth?

Simulates sub-diffraction beads through each PSF model with known parameters,
random sub-pixel positions, background and Poisson noise, fits them, and
checks the issue's targets: NA and wavelength-scale parameters within 1 %,
Gaussian sigma within 1 %, low-order Zernike coefficients within 0.02 rad.
Then fits the measured bead z-stack in ../shared/data (skipped when absent).

Usage:
    python benchmarks/psf_fit.py [--seed 0] [--out benchmarks/results/psf_fit.json]

Prints a table, writes JSON (device, JAX version, shapes, parameters, results),
and exits 1 if any recovery target fails.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxsr
from jaxsr.io import read_image, write_json
from jaxsr.optics import (
    airy_psf_2d,
    astigmatic_psf_3d,
    fit_psf,
    gaussian_psf_2d,
    gaussian_psf_3d,
    pupil_psf_3d,
)

HERE = os.path.dirname(os.path.abspath(__file__))
MEASURED = os.path.join(HERE, "..", "..", "shared", "data", "decon", "pyotf_psf_520nm_na085", "psf.tif")


def beads(rng, render, n_beads, photons, background, spacing, jitter_px=0.4):
    """n_beads noisy crops of ``photons * psf(offset) + background`` at random sub-pixel offsets."""
    out, offsets = [], []
    for _ in range(n_beads):
        off = rng.uniform(-jitter_px, jitter_px, size=len(spacing)) * np.asarray(spacing)
        mean = photons * np.asarray(render(tuple(float(o) for o in off)), dtype=np.float64) + background
        out.append(rng.poisson(mean).astype(np.float32))
        offsets.append(off)
    return np.stack(out), np.stack(offsets)


def case(name, target, fitted, truth, tol, kind):
    err = abs(fitted - truth) / abs(truth) if kind == "rel" else abs(fitted - truth)
    return {"case": name, "parameter": target, "truth": float(truth), "fitted": float(fitted),
            "error": float(err), "error_kind": kind, "tolerance": tol, "pass": bool(err <= tol)}


def run_synthetic(rng):
    rows, timings = [], {}

    # Gaussian 2D, anisotropic.
    truth = (140.0, 120.0)
    data, _ = beads(rng, lambda o: gaussian_psf_2d((17, 17), sigma_nm=truth, pixel_size_nm=100.0, offset_nm=o),
                    n_beads=4, photons=5e4, background=10.0, spacing=(100.0, 100.0))
    r = fit_psf(data, model="gaussian2d", pixel_size_nm=100.0)
    rows += [case("gaussian2d", "sigma_y_nm", r.params["sigma_y_nm"], truth[0], 0.01, "rel"),
             case("gaussian2d", "sigma_x_nm", r.params["sigma_x_nm"], truth[1], 0.01, "rel")]
    timings["gaussian2d"] = r.timings

    # Gaussian 3D.
    truth3 = (350.0, 130.0, 110.0)
    data, _ = beads(rng, lambda o: gaussian_psf_3d((15, 17, 17), sigma_nm=truth3, pixel_size_nm=100.0,
                                                   z_step_nm=100.0, offset_nm=o),
                    n_beads=2, photons=2e5, background=5.0, spacing=(100.0, 100.0, 100.0))
    r = fit_psf(data, model="gaussian3d", pixel_size_nm=100.0, z_step_nm=100.0)
    for name, t in zip(("sigma_z_nm", "sigma_y_nm", "sigma_x_nm"), truth3):
        rows.append(case("gaussian3d", name, r.params[name], t, 0.01, "rel"))
    timings["gaussian3d"] = r.timings

    # Airy (CLID Bessel PSF): NA with the wavelength known, then the wavelength with NA known.
    na, wl = 1.2, 600.0
    data, _ = beads(rng, lambda o: airy_psf_2d((21, 21), na=na, wavelength_nm=wl, pixel_size_nm=65.0, offset_nm=o),
                    n_beads=4, photons=5e4, background=10.0, spacing=(65.0, 65.0))
    r = fit_psf(data, model="airy2d", pixel_size_nm=65.0, init={"na": 1.0, "wavelength_nm": wl})
    rows.append(case("airy2d", "na", r.params["na"], na, 0.01, "rel"))
    timings["airy2d_na"] = r.timings
    r = fit_psf(data, model="airy2d", pixel_size_nm=65.0, init={"na": na, "wavelength_nm": 500.0},
                fit=["wavelength_nm"])
    rows.append(case("airy2d", "wavelength_nm", r.params["wavelength_nm"], wl, 0.01, "rel"))
    timings["airy2d_wavelength"] = r.timings

    # Pupil-function 3D PSF with aberrations: NA and Zernike coefficients (rad).
    zern = np.zeros(15)
    zern[[4, 5, 6, 7, 10]] = [0.30, -0.10, -0.20, 0.10, 0.25]  # Noll 5, 6, 7, 8, 11
    optics = dict(wavelength_nm=600.0, pixel_size_nm=100.0, z_step_nm=200.0, refractive_index=1.33)
    data, _ = beads(rng, lambda o: pupil_psf_3d((15, 32, 32), na=1.1, zernike_rad=jnp.asarray(zern),
                                                offset_nm=o, **optics),
                    n_beads=1, photons=1e6, background=10.0, spacing=(200.0, 100.0, 100.0))
    r = fit_psf(data, model="pupil3d", pixel_size_nm=100.0, z_step_nm=200.0, num_zernike=15,
                init={"na": 1.0, "wavelength_nm": 600.0, "refractive_index": 1.33})
    rows.append(case("pupil3d", "na", r.params["na"], 1.1, 0.01, "rel"))
    for j in range(5, 16):
        rows.append(case("pupil3d", f"zernike_noll{j}_rad", r.params["zernike_rad"][j - 1], zern[j - 1], 0.02, "abs"))
    timings["pupil3d"] = r.timings

    # Astigmatic 3D SMLM model (Huang et al. 2008).
    astig = dict(sigma0_x_nm=120.0, sigma0_y_nm=125.0, gamma_nm=300.0, depth_nm=450.0)
    data, _ = beads(rng, lambda o: astigmatic_psf_3d((25, 17, 17), pixel_size_nm=100.0, z_step_nm=50.0,
                                                     offset_nm=o, **astig),
                    n_beads=2, photons=2e5, background=5.0, spacing=(50.0, 100.0, 100.0))
    r = fit_psf(data, model="astigmatic3d", pixel_size_nm=100.0, z_step_nm=50.0, fit=list(astig))
    for name, t in astig.items():
        rows.append(case("astigmatic3d", name, r.params[name], t, 0.01, "rel"))
    timings["astigmatic3d"] = r.timings
    return rows, timings


def run_measured():
    """Pupil fit on the measured widefield bead stack (pyOTF fixture: 520 nm, NA 0.85 air, 130/300 nm)."""
    if not os.path.exists(MEASURED):
        return None
    stack, _ = read_image(MEASURED)
    zc, yc, xc = np.unravel_index(np.argmax(stack), stack.shape)
    half = 24
    crop = stack[:, yc - half:yc + half, xc - half:xc + half]
    out = {"file": "shared/data/decon/pyotf_psf_520nm_na085/psf.tif", "crop_zyx": list(crop.shape),
           "pixel_size_nm": 130.0, "z_step_nm": 300.0, "nominal_na": 0.85, "wavelength_nm": 520.0,
           "refractive_index": 1.0, "starts": {}}
    for na0 in (0.6, 0.85):
        r = fit_psf(crop, model="pupil3d", pixel_size_nm=130.0, z_step_nm=300.0, num_zernike=15,
                    init={"na": na0, "wavelength_nm": 520.0, "refractive_index": 1.0})
        out["starts"][str(na0)] = {
            "na": float(r.params["na"]),
            "zernike_rad": {f"noll{j}": round(float(r.params["zernike_rad"][j - 1]), 4) for j in range(5, 16)},
            "bead_offset_nm_zyx": [round(float(v), 1) for v in r.offset_nm[0]],
            "background_counts": float(r.background[0]),
            "deviance_per_voxel": r.loss,
            "timings": r.timings,
        }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "psf_fit.json"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    rows, timings = run_synthetic(rng)
    measured = run_measured()

    print(f"{'case':<14}{'parameter':<22}{'truth':>10}{'fitted':>11}{'error':>10}{'tol':>8}  ok")
    for r in rows:
        err = f"{100 * r['error']:.2f}%" if r["error_kind"] == "rel" else f"{r['error']:.4f}"
        tol = f"{100 * r['tolerance']:.0f}%" if r["error_kind"] == "rel" else f"{r['tolerance']:.2f}"
        print(f"{r['case']:<14}{r['parameter']:<22}{r['truth']:>10.4g} {r['fitted']:>10.5g}{err:>10}{tol:>8}  "
              f"{'yes' if r['pass'] else 'NO'}")
    print("\ncompile / run seconds:", {k: (round(v["compile_s"], 2), round(v["run_s"], 2)) for k, v in timings.items()})
    if measured is None:
        print("\nmeasured PSF: shared/data absent, skipped")
    else:
        print("\nmeasured bead stack (pyOTF, nominal NA 0.85, 520 nm, air):")
        for start, res in measured["starts"].items():
            big = {k: v for k, v in res["zernike_rad"].items() if abs(v) >= 0.05}
            print(f"  start NA {start}: fitted NA {res['na']:.3f}, |Zernike| >= 0.05 rad: {big}, "
                  f"deviance/voxel {res['deviance_per_voxel']:.2f}")

    result = {
        "benchmark": "psf_fit",
        "jaxsr_version": jaxsr.__version__,
        "jax_version": jax.__version__,
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "seed": args.seed,
        "synthetic": rows,
        "timings_s": timings,
        "measured": measured,
        "all_pass": all(r["pass"] for r in rows),
    }
    write_json(args.out, result, overwrite=True)
    print(f"\nwrote {os.path.relpath(args.out)}; all targets met: {result['all_pass']}")
    return 0 if result["all_pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
