"""Train the pose networks shipped in jaxsr.fusion (learned pose initialisation for particle fusion).

Training particles come from the project's own simulator only (:func:`jaxsr.fusion.pose_net_batch`:
the statistics of :func:`jaxsr.fusion.simulate_particles` with every parameter drawn per particle:
20-90 % labelling, 1.5-4 localizations per labelled site, 2-6 nm lateral precision (3D: axial 2-3.5x
lateral), 0-25 % clutter, uniform random rotations over SO(3)/SO(2)), drawn afresh at every step; the
symmetry-aware winner-takes-all loss (:func:`jaxsr.fusion.pose_loss`, ``D_8`` for the pore, ``C_2``
for the 3 x 4 origami grid). Progress is scored on held-out particles from
:func:`jaxsr.fusion.simulate_particles` (the pose error of the top hypothesis and of the best of the
top 3, modulo the symmetry group, in degrees).

    python benchmarks/train_pose_net.py --structure npc        # -> jaxsr/fusion/pretrained/npc3d
    python benchmarks/train_pose_net.py --structure origami    # -> jaxsr/fusion/pretrained/origami2d
    python benchmarks/train_pose_net.py --structure npc --steps 200 --out /tmp/pose  # a quick one

Deterministic from ``--seed``; checkpoints go to ``--checkpoint-dir`` and a restarted run resumes
from them. Settings and training time go to ``benchmarks/results/train_pose_net_<structure>.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jaxsr import fusion as F  # noqa: E402
from jaxsr.fusion import learned as L  # noqa: E402
from jaxsr.io.atomic import write_json  # noqa: E402
from jaxsr.nn import TrainConfig, count_params  # noqa: E402

NAMES = {"npc": "npc3d", "origami": "origami2d"}


def direct_errors(rotations, true_rotations, group):
    """Angle (deg) between each predicted pose and the truth, modulo the symmetry group (no global frame:
    the network predicts poses in the class reference frame). ``rotations (P, k, d, d)`` -> ``(P, k)``."""
    m = np.einsum("pkij,pjl->pkil", rotations, true_rotations)          # R_pred Q: a symmetry when correct
    ang = F.rotation_angle(m[:, :, None] @ np.asarray(group)[None, None])
    return np.degrees(ang.min(-1))


def held_out(structure, seed, n):
    if structure == "npc":
        return F.simulate_particles(jax.random.key(seed), F.npc_sites(), n_particles=n, labelling=0.5,
                                    locs_per_site=2.0, precision_nm=(3.0, 9.0))
    return F.simulate_particles(jax.random.key(seed), F.origami_sites(), n_particles=n, labelling=0.3,
                                locs_per_site=4.0, precision_nm=4.0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--structure", choices=sorted(NAMES), required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hypotheses", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--out", default=None, help="model directory (default: the shipped one)")
    p.add_argument("--results", default=None, help="JSON (default benchmarks/results/train_pose_net_<s>.json)")
    p.add_argument("--checkpoint-dir", default=None)
    p.add_argument("--overwrite", action="store_true", help="replace the model at --out")
    p.add_argument("--continue-from", default=None, metavar="DIR",
                   help="continue training this model (a second stage, e.g. at a lower learning rate)")
    args = p.parse_args(argv)
    name = NAMES[args.structure]
    out = Path(args.out) if args.out else Path(L.__file__).parent / "pretrained" / name
    results = Path(args.results) if args.results else (
        Path(__file__).resolve().parent / "results" / f"train_pose_net_{args.structure}.json")
    ckpt = args.checkpoint_dir or f"/tmp/jaxsr-posenet-{args.structure}-{args.seed}"

    _, default = L._structure(args.structure, None, None)
    import dataclasses

    config = dataclasses.replace(default, n_hypotheses=args.hypotheses)
    sim = L.PoseSimulation()
    train = TrainConfig(steps=args.steps, batch_size=args.batch, learning_rate=args.lr, schedule="onecycle",
                        eval_every=args.eval_every, checkpoint_every=args.eval_every)
    val = held_out(args.structure, 12345, 256)
    group = config.group

    def evaluate(params):
        m = L.PoseNetModel(config, params)
        pred = L.predict_poses(m, val.particles, top_k=3)
        err = direct_errors(pred.rotations, val.rotations, group)
        return {"median_top1_deg": float(np.median(err[:, 0])), "median_best3_deg": float(np.median(err.min(1))),
                "top1_within_15deg": float(np.mean(err[:, 0] < 15)),
                "best3_within_15deg": float(np.mean(err.min(1) < 15))}

    t_last = [time.perf_counter()]

    def callback(info):
        if info["step"] % args.eval_every == 0 or info["step"] == info["steps"]:
            now = time.perf_counter()
            extra = "  ".join(f"{k} {v:.3g}" for k, v in info.items() if k not in ("step", "steps"))
            print(f"step {info['step']}/{info['steps']}  {extra}  ({now - t_last[0]:.0f} s)", flush=True)
            t_last[0] = now

    start, earlier = None, []
    if args.continue_from:
        start = L.load_pose_net(args.continue_from)
        config = start.config
        earlier = start.info.get("stages", []) + [{k: start.info.get(k) for k in ("train", "steps",
                                                                               "training_seconds", "validation")}]
    t0 = time.perf_counter()
    model = L.train_pose_net(jax.random.key(args.seed), structure=args.structure, config=config, sim=sim,
                             train=train, checkpoint_dir=ckpt, callback=callback, evaluate=evaluate, model=start)
    seconds = time.perf_counter() - t0
    total = seconds + sum(st.get("training_seconds") or 0.0 for st in earlier)
    final = evaluate(model.params)
    model = L.PoseNetModel(model.config, model.params, {**model.info, "training_seconds": seconds,
                                                        "total_training_seconds": total, "stages": earlier,
                                                        "device": jax.devices()[0].device_kind,
                                                        "validation": final, "seed": args.seed})
    L.save_pose_net(out, model, overwrite=args.overwrite or args.out is None)
    size = sum(f.stat().st_size for f in out.iterdir())
    report = {"benchmark": "train_pose_net", "structure": args.structure, "model": str(out.name),
              "argv": sys.argv[1:],
              "device": jax.devices()[0].device_kind, "jax": jax.__version__, "cpu_count": os.cpu_count(),
              "seed": args.seed, "config": config.to_dict(), "sim": sim.to_dict(), "train": train.to_dict(),
              "parameters": count_params(model.params), "model_bytes": size,
              "training_seconds": total, "stages": earlier + [{"train": train.to_dict(), "training_seconds": seconds,
                                                               "continue_from": args.continue_from}],
              "validation": final, "history": model.info["history"],
              "note": "training seconds on a CPU shared with other jobs (2 cores); resumed runs count only "
                      "the last session"}
    write_json(results, report, overwrite=True)
    print(f"wrote {out} ({size / 1024:.0f} KB, {count_params(model.params)} parameters) and {results}; "
          f"{seconds:.0f} s; validation {final}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
