"""Train the localization network shipped inside the package, from the project's own simulations only.

Training windows come from :func:`jaxsr.smlm.net.locnet_simulate` (three consecutive
40 x 40 frames of blinking emitters, pixel-integrated Gaussian PSFs of 1.0-1.7 px,
150-6000 counts per molecule, 2-60 counts of smooth random background, Poisson
shot noise and 0-2 counts of read noise, 0-5 emitters per 100 px^2), drawn afresh
at every step, with DECODE's likelihood loss (:func:`jaxsr.smlm.net.locnet_loss`).
Progress is scored every ``--eval-every`` steps on a held-out simulated EMCCD movie
(uniform emitters at about 1.5 per um^2, 100 nm pixels, sigma 130 nm, 2000 photons,
20 background; :func:`jaxsr.smlm.simulate.simulate_smlm`) by the SMLM Challenge
Jaccard index.

    python benchmarks/train_locnet.py                       # the shipped model (about 20 min on 2 cores)
    python benchmarks/train_locnet.py --steps 200 --out /tmp/locnet  # a quick one

Deterministic from ``--seed``; checkpoints go to ``--checkpoint-dir`` and a restarted run resumes
from them (Ctrl-C is safe).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxsr.forward import camera_preset  # noqa: E402
from jaxsr.io.atomic import write_json  # noqa: E402
from jaxsr.nn import TrainConfig, count_params  # noqa: E402
from jaxsr.smlm import emitter_positions, match_localizations, simulate_smlm  # noqa: E402
from jaxsr.smlm.net import (  # noqa: E402
    locnet_init,
    localize_net,
    pretrained_locnet_path,
    save_locnet,
    train_locnet,
)

PIXEL_NM = 100.0


def validation_movie(seed: int, *, n_emitters=600, n_frames=20, size=64):
    """A held-out EMCCD movie at about 1.5 emitters per um^2 and its camera."""
    cam = camera_preset("emccd")
    field = size * PIXEL_NM
    pos = emitter_positions(jax.random.key(seed), n_emitters, structure="uniform", field_nm=(field, field))
    mov = simulate_smlm(jax.random.key(seed + 1), pos, n_frames=n_frames, shape=(size, size), pixel_size_nm=PIXEL_NM,
                        sigma_nm=130.0, photons=2000.0, background=20.0, p_on=0.05, p_off=0.5, camera=cam)
    return mov, cam


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--out", default=str(pretrained_locnet_path()))
    p.add_argument("--checkpoint-dir", default="/tmp/jaxsr-locnet-ckpt")
    p.add_argument("--overwrite", action="store_true", help="replace the model at --out")
    args = p.parse_args(argv)

    model = locnet_init(jax.random.key(args.seed))
    print(f"network: {count_params(model.params)} parameters, {model.unet}")
    mov, cam = validation_movie(12345)

    def evaluate(params):
        m = dataclasses.replace(model, params=params)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            locs = localize_net(mov.frames, pixel_size_nm=PIXEL_NM, camera=cam, model=m)
        r = match_localizations(locs, mov.truth)
        return {"jaccard": r.jaccard, "rmse_nm": r.rmse_lateral_nm, "efficiency": r.efficiency_lateral}

    t0 = [time.perf_counter()]

    def progress(info):
        if info["step"] % 50 == 0 or info["step"] == info["steps"]:
            rate = (time.perf_counter() - t0[0]) / info["step"]
            extra = "".join(f" {k} {info[k]:.2f}" for k in ("jaccard", "rmse_nm", "efficiency") if k in info)
            print(f"step {info['step']}/{info['steps']} loss {info['loss']:.1f}{extra} ({rate:.2f} s/step)",
                  flush=True)

    train = TrainConfig(steps=args.steps, batch_size=args.batch, learning_rate=args.lr, seed=args.seed,
                        eval_every=args.eval_every, checkpoint_every=50)
    trained, result = train_locnet(jax.random.key(args.seed), model=model, train=train,
                                   checkpoint_dir=args.checkpoint_dir, evaluate=evaluate, callback=progress)
    final = result.history[-1]
    validation = {k: final[k] for k in ("jaccard", "rmse_nm", "efficiency")}
    trained = dataclasses.replace(trained, info={**trained.info, "validation": validation,
                                                 "seconds": time.perf_counter() - t0[0]})
    save_locnet(args.out, trained, overwrite=args.overwrite)
    results = Path(__file__).resolve().parent / "results" / "train_locnet.json"
    if Path(args.out).resolve() == pretrained_locnet_path().resolve():
        write_json(results, {"device": jax.devices()[0].device_kind, "history": result.history,
                             "train": train.to_dict(), "info": trained.info}, overwrite=True, nonfinite="null")
    print(f"wrote {args.out}: validation JI {final['jaccard']:.1f} %, RMSE {final['rmse_nm']:.1f} nm, "
          f"efficiency {final['efficiency']:.1f}")
    return np.asarray(0)


if __name__ == "__main__":
    main()
