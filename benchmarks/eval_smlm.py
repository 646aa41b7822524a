"""SMLM evaluation: CRLB efficiency of the MLE fitter, and the localize pipeline by the SMLM Challenge protocol.

    python benchmarks/eval_smlm.py            # writes benchmarks/results/eval_smlm.json
    python benchmarks/eval_smlm.py --quick    # smaller, for a smoke test
    python benchmarks/eval_smlm.py --skip-generative   # sections 1 and 2 only (2 min)

1. CRLB test (issue 5): >= 2000 isolated spots (N = 1000 photons, b = 10 photons/pixel,
   sigma = 1.3 px, 100 nm pixels, 11 x 11 ROIs, positions uniform within +-0.5 px of the ROI
   centre, Poisson noise), fitted with the PSF width fixed and free. Target: RMSE / sqrt(CRLB) in
   [0.9, 1.15] and |bias| < 0.1 sqrt(CRLB) for x and y. The CRLB is evaluated at the true
   parameters (the exact sqrt(CRLB_x) is about 5.63 nm here). Fits per second: median of 5 calls
   on all spots at once (compiled before; 10 iterations, the default).
2. Both localization methods, the MLE pipeline (:func:`jaxsr.smlm.localize`) and the
   localization network (:func:`jaxsr.smlm.net.localize_net`, shipped weights), on simulated
   EMCCD movies (uniform emitters, 64 x 64 px of 100 nm, sigma 130 nm, 2000 photons, 20
   background) from 0.07 to 3.2 emitters per um^2: Jaccard index, recall, precision, lateral
   RMSE and efficiency (Hungarian and greedy matching within 250 nm), and the precision-recall
   curve over each method's detection score. Target (issue 5): the network beats the fitter in
   Jaccard index and efficiency at >= 1 emitter per um^2.
3. The generative model's sim-to-real experiment, ``benchmarks/eval_generative.py`` (which also
   writes its own JSON and precision-recall plot; about 15 min): a network fine-tuned on the
   generative model's frames against the same network fine-tuned on naive simulations, on
   experimental-like movies. Target: higher Jaccard index and efficiency. ``--skip-generative``
   leaves it out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxsr.forward import camera_preset  # noqa: E402
from jaxsr.io.atomic import write_json  # noqa: E402
from jaxsr.smlm import (  # noqa: E402
    emitter_positions,
    fit_spots,
    gaussian_spot,
    localize,
    match_localizations,
    precision_recall_curve,
    simulate_smlm,
    spot_crlb,
)
from jaxsr.smlm.net import localize_net  # noqa: E402

PIXEL_NM = 100.0
# (label, emitters in the 64 x 64 px field, p_on): about 0.07, 0.8, 1.6 and 3.2 emitters on per um^2.
DENSITIES = (("low", 60, 0.02), ("medium", 300, 0.05), ("high", 600, 0.05), ("very_high", 1200, 0.05))


def crlb_test(n, seed):
    k1, k2 = jax.random.split(jax.random.key(seed))
    pos = 5.0 + jax.random.uniform(k1, (n, 2), minval=-0.5, maxval=0.5)
    truth = jnp.concatenate([pos, jnp.full((n, 1), 1000.0), jnp.full((n, 1), 10.0)], axis=1)
    data = jax.random.poisson(k2, gaussian_spot(truth, shape=(11, 11), sigma_px=1.3)).astype(jnp.float32)
    rows = {}
    for label, sigma in (("fixed_sigma", 1.3), ("free_sigma", None)):
        fit_spots(data, sigma_px=sigma).params.block_until_ready()  # compile (same shape), then time
        runs = []
        for _ in range(5):
            t0 = time.perf_counter()
            fit = fit_spots(data, sigma_px=sigma)
            fit.params.block_until_ready()
            runs.append(time.perf_counter() - t0)
        seconds = float(np.median(runs))
        th = truth if sigma is not None else jnp.concatenate([truth, jnp.full((n, 1), 1.3)], axis=1)
        crlb = np.asarray(spot_crlb(th, shape=(11, 11), sigma_px=sigma))
        err = np.asarray(fit.params[:, :4]) - np.asarray(truth)
        per = {}
        for i, name in enumerate(("y", "x", "photons", "background")):
            rms_crlb = float(np.sqrt(np.mean(crlb[:, i] ** 2)))
            per[name] = {"rmse": float(np.sqrt(np.mean(err[:, i] ** 2))), "sqrt_crlb": rms_crlb,
                         "ratio": float(np.sqrt(np.mean(err[:, i] ** 2)) / rms_crlb),
                         "bias_over_sqrt_crlb": float(np.mean(err[:, i]) / rms_crlb)}
        rows[label] = {"params": per, "converged_fraction": float(np.mean(fit.converged)),
                       "fits_per_second": n / seconds, "fit_seconds_runs": runs, "iterations": 10,
                       "sqrt_crlb_x_nm": per["x"]["sqrt_crlb"] * PIXEL_NM,
                       "pass": all(0.9 <= per[c]["ratio"] <= 1.15 and abs(per[c]["bias_over_sqrt_crlb"]) < 0.1
                                   for c in ("x", "y"))}
    return rows


def _score(locs, truth, seconds):
    out = {"localize_seconds_incl_compile": seconds, "n_localizations": int(locs.n)}
    for assignment in ("hungarian", "greedy"):
        r = match_localizations(locs, truth, assignment=assignment)
        out[assignment] = {k: getattr(r, k) for k in ("tp", "fp", "fn", "jaccard", "recall", "precision",
                                                       "rmse_lateral_nm", "efficiency_lateral")}
    out["median_sd_x_nm"] = float(np.median(locs.crlb_x_nm)) if locs.n else float("nan")
    pr = precision_recall_curve(locs, truth, n_thresholds=12)
    out["precision_recall"] = {k: np.asarray(v).tolist() for k, v in pr.items()}
    return out


def pipeline(n_emitters, n_frames, seed, p_on, methods=("mle", "net")):
    """Both localization methods on one simulated EMCCD movie (uniform emitters, 64 x 64 px)."""
    cam = camera_preset("emccd")
    size = 64
    field = size * PIXEL_NM
    pos = emitter_positions(jax.random.key(seed), n_emitters, structure="uniform", field_nm=(field, field))
    mov = simulate_smlm(jax.random.key(seed + 1), pos, n_frames=n_frames, shape=(size, size), pixel_size_nm=PIXEL_NM,
                        sigma_nm=130.0, photons=2000.0, background=20.0, p_on=p_on, p_off=0.5, camera=cam)
    area_um2 = ((field - 600.0) / 1000.0) ** 2
    density = len(mov.truth["frame"]) / n_frames / area_um2
    out = {"emitters": n_emitters, "frames": n_frames, "density_per_um2": density}
    for method in methods:
        t0 = time.perf_counter()
        if method == "mle":
            locs = localize(mov.frames, pixel_size_nm=PIXEL_NM, sigma_nm=130.0, camera=cam)
        else:
            locs = localize_net(mov.frames, pixel_size_nm=PIXEL_NM, camera=cam)
        out[method] = _score(locs, mov.truth, time.perf_counter() - t0)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--skip-generative", action="store_true", help="leave out section 3 (about 15 min)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results/eval_smlm.json"))
    args = p.parse_args(argv)
    n_spots = 500 if args.quick else 4000
    frames = 20 if args.quick else 200
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "crlb": crlb_test(n_spots, args.seed),
              "pipeline": {label: pipeline(n, frames, args.seed, p_on) for label, n, p_on in DENSITIES}}
    for label, r in report["crlb"].items():
        x = r["params"]["x"]
        print(f"CRLB test ({label}, {n_spots} spots): sqrt(CRLB_x) {r['sqrt_crlb_x_nm']:.2f} nm, RMSE/sqrt(CRLB) "
              f"x {x['ratio']:.3f} y {r['params']['y']['ratio']:.3f}, bias/sqrt(CRLB) x "
              f"{x['bias_over_sqrt_crlb']:+.3f}, {r['fits_per_second']:.0f} fits/s -> "
              f"{'PASS' if r['pass'] else 'FAIL'}")
    print("localization on simulated EMCCD movies (Hungarian matching within 250 nm):")
    for label, r in report["pipeline"].items():
        for method in ("mle", "net"):
            h = r[method]["hungarian"]
            print(f"  {label:>13} {r['density_per_um2']:.2f}/um^2 {method}: JI {h['jaccard']:5.1f} %, recall "
                  f"{h['recall']:.3f}, precision {h['precision']:.3f}, RMSE {h['rmse_lateral_nm']:5.1f} nm, "
                  f"efficiency {h['efficiency_lateral']:5.1f} (greedy JI {r[method]['greedy']['jaccard']:.1f} %)")
    high = [r for r in report["pipeline"].values() if r["density_per_um2"] >= 1.0]
    wins = all(r["net"]["hungarian"][k] > r["mle"]["hungarian"][k] for r in high
               for k in ("jaccard", "efficiency_lateral"))
    report["network_beats_fitter_at_high_density"] = bool(high) and wins
    print(f"network beats the fitter in JI and efficiency at every density >= 1/um^2: "
          f"{'PASS' if report['network_beats_fitter_at_high_density'] else 'FAIL'}")
    if not args.skip_generative:
        import eval_generative  # noqa: PLC0415 (benchmarks/ is on sys.path when run as a script)

        out = Path(args.out).with_name("eval_generative.json") if not args.quick else Path("/tmp/eval_generative.json")
        g = eval_generative.main((["--quick"] if args.quick else []) + ["--out", str(out)])
        keys = ("jaccard", "recall", "precision", "rmse_lateral_nm", "efficiency_lateral")
        report["generative"] = {label: {k: g[label][k] for k in keys} for label in ("shipped", "naive", "generative")}
        report["generative"]["generative_beats_naive"] = g["generative_beats_naive"]
        report["generative"]["details"] = str(out)
        print("generative model (section 3), held-out experimental-like frames:")
        for label in ("naive", "generative"):
            r = report["generative"][label]
            print(f"  network fine-tuned on {label:>10} frames: JI {r['jaccard']:5.1f} %, efficiency "
                  f"{r['efficiency_lateral']:5.1f}, RMSE {r['rmse_lateral_nm']:5.1f} nm")
        print(f"generative-trained beats naive-trained in JI and efficiency: "
              f"{'PASS' if g['generative_beats_naive'] else 'FAIL'}")
    write_json(args.out, report, overwrite=True, nonfinite="null")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
