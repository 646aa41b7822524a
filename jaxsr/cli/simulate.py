"""Simulate a widefield image of a synthetic structure and write it with its ground truth.

Writes OUTPUT (the camera image in ADU, pixel size in the metadata) and, next
to it, OUTPUT_STEM_gt.tif (ground-truth photons on the fine grid),
OUTPUT_STEM_psf.tif (the PSF on the fine grid) and OUTPUT_STEM_truth.json
(every parameter, the camera model, and the structure's geometry in nm).
Nothing is written if any of these exists, unless --overwrite.
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np

from jaxsr.cli._common import CAMERA_KEY, CAMERAS, check_outputs, nonnegative_float, positive_float, positive_int

HELP = "simulate a widefield image with ground truth (TIFF + JSON)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jaxsr.simulate import STRUCTURES

    p.add_argument("output", help="output TIFF path (.tif / .ome.tif)")
    p.add_argument("--structure", choices=STRUCTURES, default="filaments", help="sample (default filaments)")
    p.add_argument("--size", type=positive_int, default=128, help="image side in camera pixels (default 128)")
    p.add_argument("--pixel-size", type=positive_float, default=65.0, help="camera pixel size in nm (default 65)")
    p.add_argument("--upsample", type=positive_int, default=3, help="ground-truth grid factor (default 3)")
    p.add_argument("--psf", choices=["airy", "gaussian"], default="airy", help="PSF model (default airy)")
    p.add_argument("--na", type=positive_float, default=1.4, help="numerical aperture (default 1.4)")
    p.add_argument("--wavelength", type=positive_float, default=520.0, help="emission wavelength nm (default 520)")
    p.add_argument("--photons", type=positive_float, default=200.0,
                   help="peak signal photons per camera pixel above background (default 200)")
    p.add_argument("--background", type=nonnegative_float, default=20.0,
                   help="background photons per camera pixel (default 20)")
    p.add_argument("--camera", choices=CAMERAS, default="scmos", help="camera preset (default scmos)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def output_paths(output: str) -> dict[str, str]:
    """The four files one simulation writes, keyed by role."""
    base = os.path.basename(output)
    lower = base.lower()
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if lower.endswith(suffix):
            stem, ext = base[: -len(suffix)], base[-len(suffix):]
            break
    else:
        raise ValueError(f"OUTPUT: expected a .tif/.tiff/.ome.tif name, got {output!r}")
    folder = os.path.dirname(output)
    return {
        "image": output,
        "ground_truth": os.path.join(folder, f"{stem}_gt{ext}"),
        "psf": os.path.join(folder, f"{stem}_psf{ext}"),
        "truth": os.path.join(folder, f"{stem}_truth.json"),
    }


def write_simulation(sim, paths: dict[str, str], *, overwrite: bool, extra: dict | None = None) -> None:
    """Write a :class:`~jaxsr.simulate.WidefieldSimulation` to ``paths`` (atomic writes)."""
    from jaxsr.io import write_image, write_json

    # a preset camera goes into the image's metadata, where deconvolve, clid and denoise find its offset
    cam_name = getattr(sim.camera, "name", None)
    notes = {CAMERA_KEY: cam_name} if cam_name in CAMERAS else None
    write_image(paths["image"], sim.image, pixel_size_nm=sim.pixel_size_nm, overwrite=overwrite, annotations=notes)
    write_image(paths["ground_truth"], sim.object, pixel_size_nm=sim.fine_pixel_size_nm, overwrite=overwrite)
    write_image(paths["psf"], sim.psf, pixel_size_nm=sim.fine_pixel_size_nm, overwrite=overwrite)
    cam = sim.camera
    truth = {
        "structure": sim.structure,
        "pixel_size_nm": sim.pixel_size_nm,
        "ground_truth_pixel_size_nm": sim.fine_pixel_size_nm,
        "background_photons": sim.background_photons,
        "camera": {
            "name": cam.name, "qe": float(cam.qe), "em_gain": float(cam.em_gain),
            "gain_e_per_adu": float(cam.gain_e_per_adu), "offset_adu": float(cam.offset_adu),
            "read_noise_e": float(np.mean(cam.read_noise_e)), "bit_depth": cam.bit_depth,
        },
        "separations_nm": list(sim.separations_nm),
        # Polylines are decimated to at most 200 points each (the exact object is the _gt image).
        "features_nm": _decimate(sim.features_nm).tolist(),
        "files": {k: os.path.basename(v) for k, v in paths.items()},
    }
    truth.update(extra or {})
    write_json(paths["truth"], truth, overwrite=overwrite)


def _decimate(features) -> np.ndarray:
    f = np.round(np.asarray(features, dtype=np.float64), 2)
    if f.ndim == 3 and f.shape[1] > 200:
        idx = np.unique(np.linspace(0, f.shape[1] - 1, 200).round().astype(int))
        f = f[:, idx]
    return f


def run(args: argparse.Namespace) -> int:
    from jaxsr.simulate import simulate_widefield

    paths = output_paths(args.output)
    check_outputs(paths, overwrite=args.overwrite)
    sim = simulate_widefield(
        jax.random.key(args.seed), structure=args.structure, shape=(args.size, args.size),
        pixel_size_nm=args.pixel_size, upsample=args.upsample, psf=args.psf, na=args.na,
        wavelength_nm=args.wavelength, signal_photons=args.photons, background_photons=args.background,
        camera=args.camera,
    )
    params = {"psf": args.psf, "na": args.na, "wavelength_nm": args.wavelength, "signal_photons": args.photons,
              "seed": args.seed, "upsample": args.upsample}
    write_simulation(sim, paths, overwrite=args.overwrite, extra={"parameters": params})
    for role, path in paths.items():
        print(f"{role:>13}: {path}")
    return 0
