"""Sim-to-real gap: a localization network trained on the generative model's frames vs on naive simulations.

    python benchmarks/eval_generative.py           # writes benchmarks/results/eval_generative.{json,png}
    python benchmarks/eval_generative.py --quick   # a smoke test

"Experimental-like" movies (issue 5, section 4) come from a microscope the naive simulator does
not know: an aberrated pupil PSF (NA 1.4, 670 nm, oil; astigmatism, coma and spherical
aberration, :func:`jaxsr.smlm.generative.pupil_psf_grid`), a static structured background
(autofluorescent blobs of 2.5-8 px over a gradient; the naive simulator's background
only varies over 6 px and more), and an sCMOS-like per-pixel read-noise map
(log-normal, median 1.5 counts, 2 % hot pixels at 8-20 counts rms). Emitters are uniform at
about 1.2 per um^2 (100 nm pixels), blinking (p_on 0.05, p_off 0.4), Gamma photons (mean 1500
counts, CV 0.5).

1. An unlabeled movie (300 frames of 64 x 64) is the only data the generative model sees: the
   shipped localization network proposes particles, :func:`jaxsr.smlm.generative.fit_generative`
   learns the pupil aberrations, background and read-noise maps and refines the particles, and
   fits the priors; :func:`jaxsr.smlm.generative.calibrate_density` corrects the density prior
   for the molecules the encoder missed (its recall on the model's own frames).
2. Two copies of the shipped network are fine-tuned with the same budget (steps, batch,
   learning rate, seed): one on naive simulations (:func:`jaxsr.smlm.net.locnet_simulate`, the
   frames it was trained on), one on the generative model's frames
   (:func:`jaxsr.smlm.generative.generative_sampler`).
3. Both are scored on a held-out labelled movie of the same microscope (200 frames): Jaccard
   index, recall, precision, RMSE, efficiency (SMLM Challenge, Hungarian, 250 nm) and the
   precision-recall curve over the detection threshold. Target: the generative-trained network
   has the higher Jaccard index and efficiency.
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

from jaxsr.io.atomic import atomic_path, write_json  # noqa: E402
from jaxsr.nn import TrainConfig  # noqa: E402
from jaxsr.smlm import blink, match_localizations, precision_recall_curve  # noqa: E402
from jaxsr.smlm.generative import (  # noqa: E402
    calibrate_density,
    fit_generative,
    generative_sampler,
    pupil_psf_grid,
    render_particles,
)
from jaxsr.smlm.net import _default_locnet, load_locnet, localize_net, train_locnet  # noqa: E402

PIXEL_NM = 100.0
OPTICS = {"na": 1.4, "wavelength_nm": 670.0, "refractive_index": 1.518, "pixel_size_nm": PIXEL_NM,
          "oversample": 4, "psf_size": 15}
# Noll 5 (oblique astigmatism), 6 (astigmatism), 7, 8 (coma), 11 (spherical); radians.
TRUE_ZERNIKE = np.zeros(11, np.float32)
TRUE_ZERNIKE[[4, 5, 6, 7, 10]] = [0.45, -0.3, 0.5, 0.25, 0.4]


def microscope_maps(seed: int, size: int):
    """Static structured background (counts) and sCMOS-like read-noise variance map (counts^2)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    bg = 25.0 + 10.0 * (yy / size) + 6.0 * (xx / size)
    for _ in range(int(0.01 * size * size)):
        cy, cx = rng.uniform(0, size, 2)
        w = rng.uniform(2.5, 8.0)
        bg += rng.uniform(5.0, 25.0) * np.exp(-0.5 * ((yy - cy) ** 2 + (xx - cx) ** 2) / w**2)
    sd = 1.5 * np.exp(0.3 * rng.standard_normal((size, size)))
    hot = rng.uniform(size=(size, size)) < 0.02
    sd[hot] = rng.uniform(8.0, 20.0, hot.sum())
    return bg.astype(np.float32), (sd**2).astype(np.float32)


def experimental_like_movie(seed: int, *, n_frames: int, size: int, maps):
    """Frames (counts) and ground truth (nm) of the 'experimental' microscope."""
    bg, var = maps
    key = jax.random.key(seed)
    k_pos, k_blink, k_ph, k_noise, k_read = jax.random.split(key, 5)
    n_em = int(1.2e-2 * size * size * (0.05 + 0.4) / 0.05)  # 1.2 on per um^2 at duty cycle 0.05 / 0.45
    pos = np.asarray(jax.random.uniform(k_pos, (n_em, 2), minval=-0.5, maxval=size - 0.5))
    on = np.asarray(blink(k_blink, n_em, n_frames, p_on=0.05, p_off=0.4))
    ph = np.asarray(jax.random.gamma(k_ph, 4.0, (n_frames, n_em)) * (1500.0 / 4.0)) * on
    psf = pupil_psf_grid(jnp.asarray(TRUE_ZERNIKE), **OPTICS)
    ys = jnp.broadcast_to(jnp.asarray(pos[:, 0]), ph.shape)
    xs = jnp.broadcast_to(jnp.asarray(pos[:, 1]), ph.shape)
    spots = np.concatenate([np.asarray(render_particles(ys[i:i + 50], xs[i:i + 50], jnp.asarray(ph[i:i + 50]), psf,
                                                        shape=(size, size), oversample=OPTICS["oversample"]))
                            for i in range(0, n_frames, 50)])
    expected = spots + bg[None]
    frames = np.asarray(jax.random.poisson(k_noise, expected), np.float32)
    frames += np.sqrt(var)[None] * np.asarray(jax.random.normal(k_read, frames.shape))
    t, e = np.nonzero(on)
    truth = {"frame": t, "x_nm": (pos[e, 1] + 0.5) * PIXEL_NM, "y_nm": (pos[e, 0] + 0.5) * PIXEL_NM,
             "photons": ph[t, e]}
    return frames, truth


def _score(locs, truth):
    r = match_localizations(locs, truth)
    pr = precision_recall_curve(locs, truth, n_thresholds=15)
    return {"jaccard": r.jaccard, "recall": r.recall, "precision": r.precision, "rmse_lateral_nm": r.rmse_lateral_nm,
            "efficiency_lateral": r.efficiency_lateral, "tp": r.tp, "fp": r.fp, "fn": r.fn,
            "precision_recall": {k: np.asarray(v).tolist() for k, v in pr.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=600, help="fine-tuning steps of each network")
    p.add_argument("--fit-steps", type=int, default=150, help="generative-model fit steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="starting localization network (default: the shipped one)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "eval_generative.json"))
    args = p.parse_args(argv)
    size = 64
    n_unlabeled, n_test = (60, 40) if args.quick else (300, 200)
    steps = 20 if args.quick else args.steps
    fit_steps = 20 if args.quick else args.fit_steps
    maps = microscope_maps(args.seed, size)
    unlabeled, _ = experimental_like_movie(args.seed + 1, n_frames=n_unlabeled, size=size, maps=maps)
    test, truth = experimental_like_movie(args.seed + 2, n_frames=n_test, size=size, maps=maps)
    base = _default_locnet() if args.model is None else load_locnet(args.model)
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "quick": args.quick,
              "true_zernike_rad": TRUE_ZERNIKE.tolist()}

    # 1. The generative model from the unlabeled movie alone.
    t0 = time.perf_counter()
    enc = localize_net(unlabeled, pixel_size_nm=PIXEL_NM, model=base)
    particles = {"frame": enc.frame, "y": enc.y_nm / PIXEL_NM - 0.5, "x": enc.x_nm / PIXEL_NM - 0.5,
                 "photons": enc.photons}
    gm = fit_generative(unlabeled, particles, steps=fit_steps, **OPTICS,
                        callback=lambda i, v: print(f"  fit step {i}: nll {v:.4f}", flush=True) if i % 50 == 0
                        else None)
    fitted_density = gm.priors.density
    gm = calibrate_density(jax.random.key(args.seed + 3), gm, base)
    bg_true, var_true = maps
    model_info = report["generative_model"] = {
        "seconds": time.perf_counter() - t0, "proposals": int(enc.n), "nll_first_last": [gm.history[0], gm.history[-1]],
        "zernike_rad": np.asarray(gm.microscope.zernike_rad).tolist(),
        "background_rel_error": float(np.median(np.abs(np.asarray(gm.microscope.background) - bg_true) / bg_true)),
        "read_sd_median": float(np.median(np.sqrt(np.asarray(gm.microscope.read_variance)))),
        "read_sd_median_true": float(np.median(np.sqrt(var_true))),
        "hot_pixels_found": float(np.mean(np.asarray(gm.microscope.read_variance)[var_true > 25] > 25)),
        "hot_pixels_false": float(np.mean(np.asarray(gm.microscope.read_variance)[var_true <= 25] > 25)),
        "priors": gm.priors._asdict(), "density_before_calibration": fitted_density,
        "true_density": len(truth["frame"]) / n_test / size**2}
    print(f"generative model: {enc.n} proposals, NLL {gm.history[0]:.3f} -> {gm.history[-1]:.3f}, "
          f"zernike {np.round(np.asarray(gm.microscope.zernike_rad), 2).tolist()} "
          f"(true {TRUE_ZERNIKE.round(2).tolist()}), background median rel. error "
          f"{model_info['background_rel_error']:.3f}, read sd median {model_info['read_sd_median']:.2f} "
          f"(true {model_info['read_sd_median_true']:.2f}), hot pixels found {model_info['hot_pixels_found']:.2f}, "
          f"false {model_info['hot_pixels_false']:.3f}; priors {gm.priors} (true density "
          f"{model_info['true_density']:.4f} per px^2)")

    # 2. Fine-tune two copies of the shipped network with the same budget.
    train = TrainConfig(steps=steps, batch_size=16, learning_rate=3e-4, schedule="cosine", seed=args.seed,
                        eval_every=max(1, steps // 4))
    nets = {}
    for label, sampler in (("naive", None), ("generative", generative_sampler(gm, size=base.sim.size))):
        t0 = time.perf_counter()
        nets[label], _ = train_locnet(jax.random.key(0), model=base, train=train, sampler=sampler,
                                      callback=lambda info, lab=label: print(
                                          f"  {lab} step {info['step']}/{info['steps']} loss {info['loss']:.1f}",
                                          flush=True) if info["step"] % 100 == 0 else None)
        report.setdefault("finetune_seconds", {})[label] = time.perf_counter() - t0

    # 3. Score on the held-out labelled movie.
    report["shipped"] = _score(localize_net(test, pixel_size_nm=PIXEL_NM, model=base), truth)
    for label, net in nets.items():
        report[label] = _score(localize_net(test, pixel_size_nm=PIXEL_NM, model=net), truth)
    for label in ("shipped", "naive", "generative"):
        r = report[label]
        print(f"{label:>10}: JI {r['jaccard']:5.1f} %, recall {r['recall']:.3f}, precision {r['precision']:.3f}, "
              f"RMSE {r['rmse_lateral_nm']:5.1f} nm, efficiency {r['efficiency_lateral']:5.1f}")
    g, n = report["generative"], report["naive"]
    report["generative_beats_naive"] = bool(g["jaccard"] > n["jaccard"]
                                            and g["efficiency_lateral"] > n["efficiency_lateral"])
    print(f"generative-trained beats naive-trained in JI and efficiency: "
          f"{'PASS' if report['generative_beats_naive'] else 'FAIL'}")
    out = Path(args.out)
    write_json(out, report, overwrite=True, nonfinite="null")
    _plot(report, out.with_suffix(".png"), test[0], maps)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


def _plot(report, path, frame, maps):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    ax[0].imshow(frame, cmap="gray")
    ax[0].set_title("experimental-like frame (counts)")
    ax[1].imshow(np.sqrt(maps[1]), cmap="magma")
    ax[1].set_title("true read-noise sd map (counts)")
    for label, style in (("shipped", ":"), ("naive", "--"), ("generative", "-")):
        pr = report[label]["precision_recall"]
        ax[2].plot(pr["recall"], pr["precision"], style, label=f"{label} (JI {report[label]['jaccard']:.1f} %)")
    ax[2].set_xlabel("recall")
    ax[2].set_ylabel("precision")
    ax[2].set_title("precision-recall on held-out frames")
    ax[2].legend()
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
