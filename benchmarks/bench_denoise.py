"""Denoising U-Net benchmark: jaxsr's Flax U-Net against a PyTorch U-Net of identical shape, same run.

Model: :class:`jaxsr.nn.unet.UNet` with the default :class:`~jaxsr.nn.unet.UNetConfig` (the
Noise2Noise / 3Snet U-Net: 5 poolings, 48 encoder / 96 decoder channels, LeakyReLU 0.1, 2x2
max-pooling, nearest 2x upsampling, skip concatenation, the input concatenated before the last
block; 988,609 parameters) and :class:`TorchUNet`, the same network written here in PyTorch (the
script asserts equal parameter counts, loads the Flax initial weights into it and checks that both
give the same output and the same loss trajectory before any timing is reported).

Measured (float32 throughout):

* ``train``: one training step on a batch of 16 patches of 64 x 64, MSE loss, Adam (lr 1e-4):
  forward, backward, optimiser update. JAX: ``jax.value_and_grad`` + ``optax.adam`` in one
  ``jax.jit`` with ``donate_argnums`` for the parameters and the optimiser state (the update is fused
  into the step); PyTorch: ``zero_grad(set_to_none=True)``, ``backward``, ``Adam.step``. The batch is
  already on the device (no data pipeline in the timing). Reported per step: ``--steps`` steps per
  timed call, the median of ``--repeats`` calls.
* ``infer``: one whole 1024 x 1024 frame, batch 1 (JAX: a jitted ``model.apply``; PyTorch:
  ``torch.inference_mode``), median of ``--repeats`` calls.
* JAX compile time (``lower`` + ``compile``) and the first call are reported apart.

PyTorch peers: ``torch`` (NCHW) and ``torch_channels_last`` (NHWC memory format), each with
PyTorch's default thread count (one per core) and with one thread (``--torch-threads``; on a loaded
2-core machine one thread is faster for PyTorch, whose OpenMP barriers wait for descheduled
threads). The ratios JAX / PyTorch use the fastest PyTorch peer of the run (the stricter
comparison) and are also given per peer.

XLA flags are read once, when JAX creates its backend, so every JAX configuration runs in a worker
subprocess of this script (``--worker``; commands and replies as JSON lines over a pipe) started with
its own ``XLA_FLAGS``; the PyTorch peers run in the main process. Flag sets (``--flag-sets``):

* ``none``: ``XLA_FLAGS`` empty (XLA's defaults);
* ``jaxsr``: what the package sets itself: nothing process-wide (``jaxsr/_xla_flags.py``), so it
  equals ``none`` and is skipped when ``none`` runs too;
* any ``NAME=FLAGS`` given with ``--flag-set`` (e.g. ``--flag-set "ynn_off=--xla_cpu_experimental_ynn_fusion_type="``).

JAX model variants (``--jax-variants``, run with the first flag set; the others run ``flax``):
``flax`` (the package's U-Net, always first), ``lax_nhwc`` / ``lax_nchw`` (the same network written
with ``lax.conv_general_dilated`` and explicit dimension numbers, same parameters, to compare
layouts), ``lax_*_rpool`` (max-pooling as reshape + max instead of ``reduce_window``), and any of
them with the suffix ``_splitN``: the training batch cut into N micro-batches whose forward and
backward passes are independent inside the one jitted step (same loss and gradient up to float32
rounding). With jaxlib 0.10.2 each convolution runs as a single-threaded YNNPACK fusion and XLA:CPU
parallelises by running independent operations concurrently, so ``flax_split2`` is one way a
training step uses both cores; the suffix ``_trainopts`` is the other: the step compiled with
:func:`jaxsr._xla_flags.cpu_training_compiler_options` (Eigen convolutions, multi-threaded inside each
op, for that computation only). See ``FINDINGS``.

Protocol: all workers compile and warm up first; then ``--repeats`` rounds, each timing every peer
once in turn (PyTorch and every JAX worker/variant interleaved, only one running at a time), so a
change of machine load during the run affects every peer alike; medians are reported.

Numerics (checked before timing is reported; exit 1 on failure): every JAX configuration starts
from the same initial weights and batches and runs ``--check-steps`` Adam steps; the loss trajectory
must match the ``none`` flag set (or the first one) to ``--tol`` relative, and PyTorch's to
``--torch-tol`` (different convolution libraries; float32 rounding differences grow a little over
the steps). The inference output on the frame is compared too.

Usage:
    python benchmarks/bench_denoise.py [--quick] [--steps 5] [--repeats 5]
        [--flag-sets none,jaxsr] [--flag-set NAME=FLAGS ...] [--jax-variants flax,flax_split2]
        [--torch-threads 0,1] [--skip-inference] [--out benchmarks/results/bench_denoise.json]

    # the committed result (shared 2-core machine):
    python benchmarks/bench_denoise.py --steps 3 --repeats 5 --flag-sets none,jaxsr,ynn_off,ynn_eltwise \
        --jax-variants flax,flax_split2,lax_nhwc_rpool_split2 \
        --flag-set "ynn_off=--xla_cpu_experimental_ynn_fusion_type=" \
        --flag-set "ynn_eltwise=--xla_cpu_experimental_ynn_fusion_type=+eltwise"

    # the committed GPU result (benchmarks/results/gpu/bench_denoise.json; XLA CPU flags do not apply):
    python benchmarks/bench_denoise.py --flag-sets none --jax-variants flax --precision float32

On a GPU, ``--precision float32`` asks both frameworks for IEEE float32 convolutions (JAX's
``jax_default_matmul_precision="highest"``, PyTorch without TensorFloat-32; otherwise cuDNN rounds
convolution inputs to TF32 by default and the numerics check compares different computations).

Writes JSON (device kind, versions, CPU count, load average, shapes, parameters, all timings,
ratios, numerics checks, targets). Runs unchanged on a GPU (PyTorch on CUDA when available, JAX on
its default device); XLA CPU flags do not affect GPU kernels.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MARK = "@@bench_denoise@@ "

FULL = {"depth": 5, "features": 48, "decoder_features": 96, "batch": 16, "patch": 64, "frame": 1024}
QUICK = {"depth": 2, "features": 8, "decoder_features": 8, "batch": 4, "patch": 32, "frame": 128}
LEARNING_RATE = 1e-4
NEGATIVE_SLOPE = 0.1
FINDINGS = (
    "jaxlib 0.10.2 lowers every convolution of the U-Net (forward and both gradients) to a YNNPACK "
    "fusion (__ynn_fusion). At the training-step shapes (batch 16 of 64 x 64) one such fusion runs on "
    "one thread (the largest layer's convolution takes 71 ms with 1 core and with 2), while a whole "
    "1024 x 1024 frame is split over both cores (inference 4.6 s on 1 core, 2.4 s on 2). XLA:CPU "
    "otherwise parallelises by running independent ops concurrently, so the plain training step uses "
    "about one core. Two fixes, each about 1.45x: compile the step with Eigen convolutions, "
    "multi-threaded inside each op (*_trainopts: jaxsr._xla_flags.cpu_training_compiler_options), or "
    "cut the batch into 2 independent micro-batches inside the jitted step (*_split2: the same loss, "
    "the gradient summed by autodiff), which gives XLA two chains to run side by side.",
    "PyTorch 2.13 CPU (oneDNN) convolutions are about as fast as YNNPACK's on one core (largest layer "
    "forward: 115 vs 104 GFLOP/s) but parallelise inside each convolution (about 225 GFLOP/s on 2 "
    "cores); Eigen's multi-threaded convolutions are slower per core, hence the remaining gap.",
    "XLA flags (each in its own worker, interleaved; float32 losses equal to 2e-6): "
    "--xla_cpu_experimental_ynn_fusion_type= (Eigen convolutions, multi-threaded inside each op) makes "
    "the training step 1.45x faster on 2 idle cores (0.74 -> 0.51 s; equal on a loaded machine or on 1 "
    "core) but whole-frame inference 8-17 % and accelerated Richardson-Lucy about 6 % slower, so jaxsr "
    "sets no process-wide flag and applies it to training steps only, as a per-computation compiler "
    "option (jaxsr._xla_flags.cpu_training_compiler_options; variant *_trainopts here). With "
    "--xla_cpu_use_onednn=true added: no better (this jaxlib has no oneDNN convolution rewrite; the "
    "oneDNN custom-call path needs an XLA build with ENABLE_ONEDNN_ASYNC). "
    "--xla_cpu_experimental_ynn_fusion_type=+eltwise: 5-17 % slower. "
    "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY, "
    "--xla_cpu_enable_concurrency_optimized_scheduler=true, --xla_cpu_multi_thread_eigen=false, "
    "--xla_cpu_max_isa=AVX2: within +-2 % (noise).",
    "Layout: the same network written with lax.conv_general_dilated in NCHW is about 10 % slower than "
    "NHWC (XLA inserts transposes); max-pooling as a reshape + max (lax_*_rpool) instead of "
    "reduce_window avoids select_and_scatter in the gradient, about 5 %.",
    "PyTorch with 2 threads is very sensitive to other load on a 2-core machine (its OpenMP barriers "
    "wait for descheduled threads): hence the 1-thread PyTorch peers; the ratios use the fastest "
    "PyTorch peer of the run.",
)
JAX_VARIANTS = ("flax", "lax_nhwc", "lax_nchw", "lax_nhwc_rpool", "lax_nchw_rpool")
TARGET_STEP_RATIO = 1.2  # issue 4: JAX step time at most 1.2x PyTorch's on this CPU


# --------------------------------------------------------------------------- #
# Data shared by both sides (deterministic NumPy, NHWC float32)
# --------------------------------------------------------------------------- #
def make_batches(n, batch, patch, seed=1234):
    """``n`` Noise2Noise pairs (x, y) of ``(batch, patch, patch, 1)``: a smooth pattern + 2 noises."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:patch, 0:patch].astype(np.float32) / patch
    out = []
    for _ in range(n):
        fy, fx, ph = rng.uniform(1.0, 6.0, (3, batch, 1, 1)).astype(np.float32)
        clean = 0.5 + 0.4 * np.sin(2 * np.pi * (fy * yy + fx * xx) + ph)
        x = clean + 0.2 * rng.standard_normal(clean.shape).astype(np.float32)
        y = clean + 0.2 * rng.standard_normal(clean.shape).astype(np.float32)
        out.append((x[..., None].astype(np.float32), y[..., None].astype(np.float32)))
    return out


def make_frame(size, seed=99):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / 64.0
    clean = 0.5 + 0.4 * np.sin(yy) * np.cos(1.3 * xx)
    return (clean + 0.2 * rng.standard_normal(clean.shape)).astype(np.float32)[None, :, :, None]


def cpu_description():
    """Model name, x86 family/model and AVX-512 support from ``/proc/cpuinfo`` (the ratios depend on the CPU
    generation: PyTorch's oneDNN and XLA's Eigen kernels use AVX-512 differently); ``None`` elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    first = text.split("\n\n", 1)[0]
    info = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    return {"model_name": info.get("model name"), "family": info.get("cpu family"), "model": info.get("model"),
            "avx512f": "avx512f" in info.get("flags", "").split()}


def rel_diff(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-30))


# --------------------------------------------------------------------------- #
# PyTorch U-Net of identical shape (main process)
# --------------------------------------------------------------------------- #
def torch_unet_class():
    import torch  # noqa: PLC0415 - optional peer, imported only where used
    import torch.nn.functional as F  # noqa: N812, PLC0415
    from torch import nn  # noqa: PLC0415

    class TorchUNet(nn.Module):
        """The Noise2Noise U-Net of :class:`jaxsr.nn.unet.UNet` (no attention / back-projection), NCHW.

        Layer names follow the Flax module (enc0.., dec{level}a/b, out) so weights map one to one.
        """

        def __init__(self, depth, features, decoder_features, in_channels=1, out_channels=1,
                     negative_slope=NEGATIVE_SLOPE):
            super().__init__()
            self.depth, self.slope = depth, negative_slope
            conv = lambda cin, cout: nn.Conv2d(cin, cout, 3, padding=1)  # noqa: E731  ("SAME", zero pad)
            layers = {"enc0": conv(in_channels, features)}
            for i in range(1, depth + 2):
                layers[f"enc{i}"] = conv(features, features)
            for level in range(depth, 0, -1):
                below = features if level == depth else decoder_features
                skip = features if level > 1 else in_channels
                if level > 1:
                    layers[f"dec{level}a"] = conv(below + skip, decoder_features)
                    layers[f"dec{level}b"] = conv(decoder_features, decoder_features)
                else:
                    layers["dec1a"] = conv(below + skip, 64)
                    layers["dec1b"] = conv(64, 32)
            layers["out"] = conv(32, out_channels)
            self.layers = nn.ModuleDict(layers)

        def forward(self, x):
            act = lambda v: F.leaky_relu(v, self.slope)  # noqa: E731
            L = self.layers  # noqa: N806
            h = act(L["enc0"](x))
            h = F.max_pool2d(act(L["enc1"](h)), 2)
            skips = [x, h]
            for level in range(2, self.depth + 1):
                h = F.max_pool2d(act(L[f"enc{level}"](h)), 2)
                skips.append(h)
            h = act(L[f"enc{self.depth + 1}"](skips.pop()))
            for level in range(self.depth, 0, -1):
                h = F.interpolate(h, scale_factor=2, mode="nearest")
                h = torch.cat([h, skips.pop()], dim=1)
                h = act(L[f"dec{level}a"](h))
                h = act(L[f"dec{level}b"](h))
            return L["out"](h)

    return TorchUNet


class TorchPeer:
    """PyTorch training step and inference, optionally in channels-last memory format."""

    def __init__(self, name, sizes, flax_params, batches, frame, channels_last, device, threads):
        import torch  # noqa: PLC0415

        self.torch, self.name, self.device, self.threads = torch, name, device, threads
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        cls = torch_unet_class()
        self.model = cls(sizes["depth"], sizes["features"], sizes["decoder_features"])
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.load(flax_params)
        self.model = self.model.to(device=device, memory_format=self.fmt)
        self.infer_model = cls(sizes["depth"], sizes["features"], sizes["decoder_features"])
        self.infer_model.load_state_dict(self.model.state_dict())
        self.infer_model = self.infer_model.to(device=device, memory_format=self.fmt).eval()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LEARNING_RATE)
        self.batches = [(self.tensor(x), self.tensor(y)) for x, y in batches]
        self.frame = self.tensor(frame)

    def tensor(self, nhwc):
        t = self.torch.from_numpy(np.ascontiguousarray(np.moveaxis(nhwc, -1, 1)))
        return t.to(self.device).contiguous(memory_format=self.fmt)

    def load(self, flax_params):
        """Flax HWIO kernels -> PyTorch OIHW weights (the same initial network)."""
        torch = self.torch
        with torch.no_grad():
            for name, layer in self.model.layers.items():
                kernel = np.asarray(flax_params[name]["kernel"])  # (kh, kw, in, out)
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
                layer.bias.copy_(torch.from_numpy(np.asarray(flax_params[name]["bias"])))

    def sync(self):
        if self.device.type == "cpu":
            self.torch.set_num_threads(self.threads)  # process-wide: set before each peer's timing
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        loss = self.torch.nn.functional.mse_loss(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss

    def check(self, n):
        self.sync()
        losses = [float(self.step(*self.batches[i % len(self.batches)]).item()) for i in range(n)]
        with self.torch.inference_mode():
            out = self.infer_model(self.frame)
        return losses, np.moveaxis(out.float().cpu().numpy(), 1, -1)

    def train(self, steps):
        x, y = self.batches[0]
        self.sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = self.step(x, y)
        loss.item()
        self.sync()
        return (time.perf_counter() - t0) / steps

    def infer(self):
        self.sync()
        t0 = time.perf_counter()
        with self.torch.inference_mode():
            self.infer_model(self.frame)
        self.sync()
        return time.perf_counter() - t0


# --------------------------------------------------------------------------- #
# JAX worker (subprocess; XLA_FLAGS fixed by its environment)
# --------------------------------------------------------------------------- #
def lax_unet_apply(params, x_nhwc, *, depth, layout, reshape_pool=False, negative_slope=NEGATIVE_SLOPE):
    """The default U-Net written with ``lax`` ops in ``layout`` ("NHWC" or "NCHW"), Flax parameters.

    ``reshape_pool``: 2x2 max-pooling as a max over a reshaped axis pair instead of
    ``lax.reduce_window`` (whose gradient, ``select_and_scatter``, is a slow loop on XLA:CPU); the
    same values, and the same gradients except at exact ties inside a window.
    """
    import jax.numpy as jnp  # noqa: PLC0415
    from jax import lax  # noqa: PLC0415

    p = params["params"]
    cax = 3 if layout == "NHWC" else 1
    sp = (1, 2) if layout == "NHWC" else (2, 3)
    dn = (layout, "HWIO", layout)
    window = (1, 2, 2, 1) if layout == "NHWC" else (1, 1, 2, 2)

    def conv(v, name):
        out = lax.conv_general_dilated(v, p[name]["kernel"], (1, 1), "SAME", dimension_numbers=dn)
        shape = [1, 1, 1, 1]
        shape[cax] = -1
        return out + p[name]["bias"].reshape(shape)

    def act(v):
        return jnp.where(v >= 0, v, negative_slope * v)

    def pool(v):
        if reshape_pool:
            shape = list(v.shape)
            shape[sp[1]:sp[1] + 1] = [shape[sp[1]] // 2, 2]
            shape[sp[0]:sp[0] + 1] = [shape[sp[0]] // 2, 2]
            return v.reshape(shape).max(axis=(sp[0] + 1, sp[1] + 2))
        return lax.reduce_window(v, -jnp.inf, lax.max, window, window, "VALID")

    x = x_nhwc if layout == "NHWC" else jnp.transpose(x_nhwc, (0, 3, 1, 2))
    h = pool(act(conv(act(conv(x, "enc0")), "enc1")))
    skips = [x, h]
    for level in range(2, depth + 1):
        h = pool(act(conv(h, f"enc{level}")))
        skips.append(h)
    h = act(conv(skips.pop(), f"enc{depth + 1}"))
    for level in range(depth, 0, -1):
        h = jnp.repeat(jnp.repeat(h, 2, axis=sp[0]), 2, axis=sp[1])
        h = jnp.concatenate([h, skips.pop()], axis=cax)
        h = act(conv(act(conv(h, f"dec{level}a")), f"dec{level}b"))
    out = conv(h, "out")
    return out if layout == "NHWC" else jnp.transpose(out, (0, 2, 3, 1))


_VARIANT_RE = re.compile(r"(?P<base>[a-z_]+?)(?:_split(?P<split>\d+))?(?P<opts>_trainopts)?")


def parse_variant(variant):
    """``lax_nhwc_rpool_split2_trainopts`` -> ("lax_nhwc_rpool", 2, True); None if malformed."""
    m = _VARIANT_RE.fullmatch(variant)
    if m is None or m["base"] not in JAX_VARIANTS:
        return None
    return m["base"], int(m["split"] or 1), bool(m["opts"])


def base_variant(variant):
    """``flax_split2`` -> ``flax``."""
    return parse_variant(variant)[0]


def micro_batches(variant):
    """``flax_split2`` -> 2 (the batch is cut into 2 micro-batches); 1 without a suffix."""
    return parse_variant(variant)[1]


def uses_train_options(variant):
    """``..._trainopts``: the step is compiled with :func:`jaxsr._xla_flags.cpu_training_compiler_options`."""
    return parse_variant(variant)[2]


def worker_main(args):
    """Serve timing commands for one XLA flag set (see the module docstring)."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    import jaxlib  # noqa: PLC0415
    import optax  # noqa: PLC0415

    from jaxsr._xla_flags import cpu_training_compiler_options  # noqa: PLC0415
    from jaxsr.nn.unet import UNet, UNetConfig, count_params, unet_init  # noqa: PLC0415

    jax.devices()  # initialise the backend with this worker's XLA_FLAGS
    sizes = json.loads(args.sizes)
    cfg = UNetConfig(depth=sizes["depth"], features=sizes["features"], decoder_features=sizes["decoder_features"])
    module = UNet(cfg)
    params0 = unet_init(jax.random.key(0), config=cfg)
    params0_np = jax.tree_util.tree_map(np.asarray, params0)
    tx = optax.adam(LEARNING_RATE)
    batches = make_batches(args.check_steps, sizes["batch"], sizes["patch"])
    frame_np = make_frame(sizes["frame"])

    def forward_fn(variant):
        variant = base_variant(variant)
        if variant == "flax":
            return module.apply
        layout = "NCHW" if variant.startswith("lax_nchw") else "NHWC"
        rpool = variant.endswith("_rpool")
        return lambda p, x: lax_unet_apply(p, x, depth=cfg.depth, layout=layout, reshape_pool=rpool)

    states = {}

    def build(variant, with_inference):
        fwd = forward_fn(variant)
        n_split = micro_batches(variant)
        # a frame is one batch item (nothing to split); the training options are for training steps
        with_inference = with_inference and n_split == 1 and not uses_train_options(variant)

        def loss_fn(p, x, y):
            if n_split == 1:
                return jnp.mean((fwd(p, x) - y) ** 2)
            # independent forward/backward chains per micro-batch: XLA:CPU runs independent ops
            # concurrently on its thread pool, while one YNNPACK convolution runs on one thread
            parts = [jnp.sum((fwd(p, xc) - yc) ** 2) for xc, yc in zip(jnp.split(x, n_split), jnp.split(y, n_split))]
            return sum(parts) / x.size

        def train_step(p, opt_state, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
            updates, opt_state = tx.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state, loss

        options = cpu_training_compiler_options() if uses_train_options(variant) else None
        step = jax.jit(train_step, donate_argnums=(0, 1), compiler_options=options or None)
        infer = jax.jit(fwd)
        params = jax.tree_util.tree_map(jnp.asarray, params0_np)
        opt_state = tx.init(params)
        xb = [(jnp.asarray(x), jnp.asarray(y)) for x, y in batches]
        rec = {}
        t0 = time.perf_counter()
        step_c = step.lower(params, opt_state, *xb[0]).compile()
        t1 = time.perf_counter()
        params, opt_state, loss = step_c(params, opt_state, *xb[0])
        loss.block_until_ready()
        t2 = time.perf_counter()
        rec["train_compile_s"], rec["train_first_call_s"] = t1 - t0, t2 - t1
        losses = [float(loss)]
        for i in range(1, args.check_steps):
            params, opt_state, loss = step_c(params, opt_state, *xb[i % len(xb)])
            losses.append(float(loss))
        rec["check_losses"] = losses
        p_infer = jax.tree_util.tree_map(jnp.asarray, params0_np)
        frame = infer_c = None
        if with_inference:
            frame = jnp.asarray(frame_np)
            t0 = time.perf_counter()
            infer_c = infer.lower(p_infer, frame).compile()
            t1 = time.perf_counter()
            out = infer_c(p_infer, frame)
            out.block_until_ready()
            t2 = time.perf_counter()
            rec["infer_compile_s"], rec["infer_first_call_s"] = t1 - t0, t2 - t1
            np.save(os.path.join(args.tmp, f"{args.worker}_{variant}_frame_out.npy"), np.asarray(out))
        rec["ynn_fusions_in_train_step"] = step_c.as_text().count('"__ynn_fusion"')
        rec["compiler_options"] = options or {}
        states[variant] = {"step": step_c, "infer": infer_c, "params": params, "opt": opt_state,
                           "xy": xb[0], "p_infer": p_infer, "frame": frame}
        return rec

    def reply(obj):
        sys.stdout.write(MARK + json.dumps(obj) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "setup":
            np.savez(os.path.join(args.tmp, "params0.npz"),
                     **{f"{k}/{n}": v for k, d in params0_np["params"].items() for n, v in d.items()})
            info = {"xla_flags": os.environ.get("XLA_FLAGS", ""),
                    "matmul_precision": str(jax.config.jax_default_matmul_precision), "jax_version": jax.__version__,
                    "jaxlib_version": jaxlib.__version__, "backend": jax.default_backend(),
                    "device_kind": str(jax.devices()[0].device_kind), "n_params": count_params(params0),
                    "variants": {v: build(v, cmd["inference"]) for v in cmd["variants"]}}
            reply(info)
        elif cmd["cmd"] == "train":
            s = states[cmd["variant"]]
            params, opt_state, (x, y) = s["params"], s["opt"], s["xy"]
            t0 = time.perf_counter()
            for _ in range(cmd["steps"]):
                params, opt_state, loss = s["step"](params, opt_state, x, y)
            loss.block_until_ready()
            dt = (time.perf_counter() - t0) / cmd["steps"]
            s["params"], s["opt"] = params, opt_state
            reply({"s": dt, "loss": float(loss)})
        elif cmd["cmd"] == "infer":
            s = states[cmd["variant"]]
            t0 = time.perf_counter()
            s["infer"](s["p_infer"], s["frame"]).block_until_ready()
            reply({"s": time.perf_counter() - t0})
        elif cmd["cmd"] == "quit":
            reply({"bye": True})
            return 0
    return 0


JAX_PRECISION = {"float32": "highest", "tf32": "tensorfloat32"}  # --precision -> jax_default_matmul_precision


class JaxWorker:
    """Parent-side handle of a worker subprocess."""

    def __init__(self, name, flags, args, sizes, tmp):
        env = dict(os.environ)
        env.pop("XLA_FLAGS", None)
        env.pop("JAXSR_NO_XLA_FLAGS", None)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--sizes", json.dumps(sizes),
               "--check-steps", str(args.check_steps), "--tmp", tmp]
        env["XLA_FLAGS"] = flags
        env.pop("JAX_DEFAULT_MATMUL_PRECISION", None)
        if args.precision != "default":
            env["JAX_DEFAULT_MATMUL_PRECISION"] = JAX_PRECISION[args.precision]
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        self.name, self.flags = name, flags
        self.log = open(os.path.join(tmp, f"{name}.log"), "w+")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env, cwd=REPO)

    def ask(self, **cmd):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
        self.log.seek(0)
        raise RuntimeError(f"JAX worker '{self.name}' (XLA_FLAGS={self.flags!r}) died:\n{self.log.read()[-3000:]}")

    def close(self):
        with contextlib.suppress(Exception):
            self.ask(cmd="quit")
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=30)
        if self.proc.poll() is None:
            self.proc.kill()
        self.log.close()


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def parse_flag_sets(args, notes):
    sets = {}
    for name in [s for s in args.flag_sets.split(",") if s]:
        if name == "none":
            sets[name] = ""
        elif name == "jaxsr":
            if "none" in args.flag_sets.split(","):
                notes.append("flag set 'jaxsr' skipped: jaxsr sets no process-wide XLA flags, so it equals 'none'")
                continue
            sets[name] = ""
        else:
            sets[name] = "?"
    for item in args.flag_set:
        name, _, flags = item.partition("=")
        sets[name] = flags
    missing = [n for n, f in sets.items() if f == "?"]
    if missing:
        raise SystemExit(f"flag sets {missing}: define them with --flag-set NAME=FLAGS")
    return sets


def summarise(times):
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny U-Net and sizes (smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per timed call (default 5; 2 quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per peer (default 5; 2 quick)")
    parser.add_argument("--check-steps", type=int, default=5, help="Adam steps compared for numerics")
    parser.add_argument("--flag-sets", default="none,jaxsr",
                        help="comma-separated JAX configurations: none, jaxsr, or names given by --flag-set")
    parser.add_argument("--flag-set", action="append", default=[], metavar="NAME=FLAGS",
                        help="define an XLA_FLAGS set (repeatable)")
    parser.add_argument("--jax-variants", default="flax,flax_trainopts,flax_split2",
                        help=f"comma-separated, 'flax' first; of {JAX_VARIANTS}, each optionally with the suffix "
                             "_splitN (the training batch cut into N independent micro-batches) and then "
                             "_trainopts (the training step compiled with jaxsr's "
                             "cpu_training_compiler_options()); run with the first flag set only, the other "
                             "flag sets run 'flax' (see --variants-all-sets)")
    parser.add_argument("--variants-all-sets", action="store_true",
                        help="run every --jax-variants variant under every flag set (default: first set only)")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-torch-channels-last", action="store_true")
    parser.add_argument("--torch-threads", default="0,1",
                        help="comma-separated torch.set_num_threads values, one PyTorch peer each (0: PyTorch's "
                             "default, one per core; 1 is added because a single thread is faster for PyTorch on "
                             "a loaded machine, where its OpenMP barriers wait for descheduled threads)")
    parser.add_argument("--skip-inference", action="store_true")
    parser.add_argument("--precision", choices=("default", "float32", "tf32"), default="default",
                        help="float32 matmul/convolution precision on a GPU, set alike in both frameworks: 'default' "
                             "leaves each framework's own, 'float32' asks for full IEEE float32 (JAX 'highest', "
                             "PyTorch without TF32), 'tf32' for TensorFloat-32 in both")
    parser.add_argument("--tol", type=float, default=1e-4, help="max rel. loss difference between JAX flag sets")
    parser.add_argument("--torch-tol", type=float, default=1e-3, help="max rel. loss difference JAX vs PyTorch")
    parser.add_argument("--note", action="append", default=[], help="free-text note stored in the JSON")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_denoise.json"))
    # worker mode (internal)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)

    sizes = dict(QUICK if args.quick else FULL)
    steps = args.steps or (2 if args.quick else 5)
    repeats = args.repeats or (2 if args.quick else 5)
    variants = [v for v in args.jax_variants.split(",") if v]
    bad = [v for v in variants if parse_variant(v) is None]
    if not variants or variants[0] != "flax" or bad:
        raise SystemExit(f"--jax-variants: 'flax' first, then any of {JAX_VARIANTS} with optional suffixes "
                         f"_splitN and _trainopts (bad: {bad})")
    notes = list(FINDINGS) + list(args.note)
    flag_sets = parse_flag_sets(args, notes)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    print(f"{os.cpu_count()} CPUs, load average {load_before}; sizes {sizes}, {steps} steps x {repeats} repeats")

    tmp = tempfile.mkdtemp(prefix="bench_denoise_")
    workers = {}
    result = {"benchmark": "bench_denoise", "sizes": sizes, "learning_rate": LEARNING_RATE, "optimizer": "adam",
              "loss": "mse", "steps_per_call": steps, "repeats": repeats, "quick": bool(args.quick),
              "jax": {}, "torch": {}}
    try:
        for name, flags in flag_sets.items():
            workers[name] = JaxWorker(name, flags, args, sizes, tmp)
        for i, (name, w) in enumerate(workers.items()):  # one at a time, so compile times are not shared
            w.variants = variants if (i == 0 or args.variants_all_sets) else ["flax"]
            info = w.ask(cmd="setup", variants=w.variants, inference=not args.skip_inference)
            result["jax"][name] = info
            for v, rec in info["variants"].items():
                print(f"  jax[{name}/{v}] XLA_FLAGS={info['xla_flags']!r}: compile train "
                      f"{rec['train_compile_s']:.2f} s, infer {rec.get('infer_compile_s', float('nan')):.2f} s; "
                      f"ynn fusions {rec['ynn_fusions_in_train_step']}")
        first = next(iter(workers))
        device_kind = result["jax"][first]["device_kind"]
        n_params = result["jax"][first]["n_params"]
        npz = np.load(os.path.join(tmp, "params0.npz"))
        flax_params = {}
        for key in npz.files:
            layer, leaf = key.split("/")
            flax_params.setdefault(layer, {})[leaf] = npz[key]
        batches = make_batches(args.check_steps, sizes["batch"], sizes["patch"])
        frame = make_frame(sizes["frame"])

        peers = {}  # name -> (train_fn, infer_fn)
        outputs = {}
        check_keys = []
        if not args.skip_torch:
            import torch  # noqa: PLC0415

            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            default_threads = torch.get_num_threads()
            thread_counts = [int(t) for t in args.torch_threads.split(",") if t] or [0]
            if device.type == "cuda":
                thread_counts = [0]
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            if args.precision != "default":
                tf32 = args.precision == "tf32"
                torch.backends.cudnn.allow_tf32 = tf32
                torch.backends.cuda.matmul.allow_tf32 = tf32
            result["precision"] = args.precision
            result["torch"].update(version=torch.__version__, device=str(device), default_threads=default_threads,
                                   device_name=(torch.cuda.get_device_name(0) if device.type == "cuda"
                                                else platform.processor() or "cpu"))
            torch_variants, seen = [], set()
            for threads in thread_counts:
                if (threads or default_threads) in seen:
                    continue
                seen.add(threads or default_threads)
                suffix = f"_{threads}thread" if threads else ""
                torch_variants.append((f"torch{suffix}", False, threads or default_threads))
                if not args.skip_torch_channels_last:
                    torch_variants.append((f"torch_channels_last{suffix}", True, threads or default_threads))
            for tname, cl, threads in torch_variants:
                peer = TorchPeer(tname, sizes, flax_params, batches, frame, cl, device, threads)
                assert peer.n_params == n_params, f"parameter counts differ: torch {peer.n_params}, flax {n_params}"
                losses, out = peer.check(args.check_steps)
                for _ in range(2):  # warm-up
                    peer.train(1)
                peer.infer()
                outputs[tname] = out
                check_keys.append(tname)
                result["torch"][tname] = {"check_losses": losses, "n_params": peer.n_params, "threads": threads,
                                          "memory_format": "channels_last" if cl else "contiguous (NCHW)"}
                peers[tname] = (peer.train, peer.infer)
        for name, w in workers.items():
            for v in w.variants:
                key = f"jax[{name}/{v}]"
                if not args.skip_inference and micro_batches(v) == 1 and not uses_train_options(v):
                    outputs[key] = np.load(os.path.join(tmp, f"{name}_{v}_frame_out.npy"))
                check_keys.append(key)
                w.ask(cmd="train", variant=v, steps=1)  # warm-up with the timing loop itself
                peers[key] = (lambda n, w=w, v=v: w.ask(cmd="train", variant=v, steps=n)["s"],
                              (lambda w=w, v=v: w.ask(cmd="infer", variant=v)["s"])
                              if micro_batches(v) == 1 and not uses_train_options(v) else None)

        # ---- numerics before timing
        ref_name = "none" if "none" in workers else first
        ref_losses = result["jax"][ref_name]["variants"]["flax"]["check_losses"]
        ref_out = outputs.get(f"jax[{ref_name}/flax]")
        checks = {}
        failed = []
        for key in check_keys:
            out = outputs.get(key)
            if key.startswith("jax["):
                name, v = key[4:-1].split("/")
                losses = result["jax"][name]["variants"][v]["check_losses"]
                tol = args.tol
            else:
                losses, tol = result["torch"][key]["check_losses"], args.torch_tol
            loss_err = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
            out_err = rel_diff(out, ref_out) if out is not None and ref_out is not None else 0.0
            ok = loss_err <= tol and out_err <= tol
            checks[key] = {"loss_rel_diff": loss_err, "frame_output_rel_diff": out_err, "tol": tol, "pass": ok}
            print(f"  numerics {key:32s} loss rel diff {loss_err:.1e}, frame output rel diff {out_err:.1e} "
                  f"(tol {tol:.0e}) {'ok' if ok else 'FAIL'}")
            if not ok:
                failed.append(key)
        result["numerics"] = {"reference": f"jax[{ref_name}/flax]", "checks": checks}
        if failed:
            print(f"ERROR: numerics differ for {failed}")
            write_json(args.out, result)
            return 1

        # ---- timing, interleaved
        train_t = {k: [] for k in peers}
        infer_t = {k: [] for k in peers}
        for r in range(repeats):
            for k, (train, _) in peers.items():
                train_t[k].append(train(steps))
            if not args.skip_inference:
                for k, (_, infer) in peers.items():
                    if infer is not None:
                        infer_t[k].append(infer())
            print(f"  round {r + 1}/{repeats}: " + ", ".join(f"{k} {train_t[k][-1]:.3f}" for k in peers)
                  + f" s/step; load {os.getloadavg()[0]:.1f}")
        timings = {}
        for k in peers:
            timings[k] = {"train_step": summarise(train_t[k])}
            if infer_t[k]:
                timings[k]["infer_frame"] = summarise(infer_t[k])
        result["timings"] = timings

        # ---- ratios
        torch_keys = [k for k in peers if k.startswith("torch")]
        ratios = {}
        if torch_keys:
            best_train = min(torch_keys, key=lambda k: timings[k]["train_step"]["median_s"])
            for k in peers:
                if k in torch_keys:
                    continue
                rk = ratios[k] = {"train_vs_best_torch": timings[k]["train_step"]["median_s"]
                                  / timings[best_train]["train_step"]["median_s"], "best_torch_train": best_train}
                for t in torch_keys:
                    rk[f"train_vs_{t}"] = timings[k]["train_step"]["median_s"] / timings[t]["train_step"]["median_s"]
                    if "infer_frame" in timings[k]:
                        rk[f"infer_vs_{t}"] = (timings[k]["infer_frame"]["median_s"]
                                               / timings[t]["infer_frame"]["median_s"])
        result["ratios_jax_over_torch"] = ratios

        print("\n== results (median; s)")
        for k in peers:
            tr = timings[k]["train_step"]["median_s"]
            inf = timings[k].get("infer_frame", {}).get("median_s", float("nan"))
            extra = ""
            if k in ratios:
                extra = f"  train x{ratios[k]['train_vs_best_torch']:.2f} vs {ratios[k]['best_torch_train']}"
            if k.startswith("jax["):
                name, v = k[4:-1].split("/")
                rec = result["jax"][name]["variants"][v]
                extra += f"  (compile: train {rec['train_compile_s']:.1f} s"
                extra += f", infer {rec['infer_compile_s']:.1f} s)" if "infer_compile_s" in rec else ")"
            print(f"  {k:32s} train step {tr:7.3f}   infer {sizes['frame']}^2 frame {inf:7.3f}{extra}")

        main_set = "jaxsr" if "jaxsr" in workers else first
        result["targets"] = {}
        for v in workers[main_set].variants:
            key = f"jax[{main_set}/{v}]"
            if key in ratios and base_variant(v) == "flax":
                value = ratios[key]["train_vs_best_torch"]
                result["targets"][f"train_step_ratio_vs_torch[{v}]"] = {
                    "peer": key, "vs": ratios[key]["best_torch_train"], "value": value,
                    "target": f"<= {TARGET_STEP_RATIO}", "pass": value <= TARGET_STEP_RATIO, "device": device_kind}
        for name, t in result["targets"].items():
            print(f"  target {name}: {t['value']:.2f} {t['target']} {'PASS' if t['pass'] else 'MISS'}")
        import jax  # noqa: PLC0415 - metadata only; computations ran in the workers
        import jaxlib  # noqa: PLC0415

        import jaxsr  # noqa: PLC0415

        load_after = os.getloadavg()
        result.update({
            "jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
            "jaxsr_version": getattr(jaxsr, "__version__", None), "numpy_version": np.__version__,
            "python_version": platform.python_version(), "platform": platform.platform(),
            "device_kind": device_kind, "backend": result["jax"][first]["backend"], "cpu_count": os.cpu_count(),
            "cpu": cpu_description(),
            "n_params": n_params, "load_average_before": list(load_before), "load_average_after": list(load_after),
            "shared_machine": max(load_before[0], load_after[0]) > 1.5 * (os.cpu_count() or 1),
            "notes": notes, "wall_s": time.perf_counter() - t_start,
        })
        write_json(args.out, result)
        print(f"\nwrote {args.out} ({result['wall_s']:.0f} s)")
        return 0
    finally:
        for w in workers.values():
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
