"""Training-data sampling for image-to-image networks: random patches and D4 augmentation.

Axis order: stacks are ``(n, y, x)`` (frames or pairs first), single images
``(y, x)``, patch batches ``(batch, p, p)``. Everything is a pure function of
an explicit PRNG key, jittable with static ``patch_size``/``batch_size``, so a
training run is reproducible from its seed and resumes exactly (the batch of
step ``s`` depends only on the key of step ``s``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsr._validate import check_int

__all__ = ["random_patches", "augment_d4"]


def _check_arrays(arrays, patch_size):
    if not arrays:
        raise ValueError("argument 'arrays': expected at least one (y, x) or (n, y, x) array")
    spatial = None
    frames = None
    for i, a in enumerate(arrays):
        if a.ndim not in (2, 3):
            raise ValueError(f"argument 'arrays[{i}]': expected (y, x) or (n, y, x), got shape {tuple(a.shape)}")
        if spatial is None:
            spatial = a.shape[-2:]
        elif a.shape[-2:] != spatial:
            raise ValueError(
                f"argument 'arrays[{i}]': expected the spatial shape {tuple(spatial)} of the first array, "
                f"got {tuple(a.shape[-2:])}"
            )
        if a.ndim == 3:
            if a.shape[0] == 0:
                raise ValueError(f"argument 'arrays[{i}]': has no frames, got shape {tuple(a.shape)}")
            if frames is None:
                frames = a.shape[0]
            elif a.shape[0] != frames:
                raise ValueError(
                    f"argument 'arrays[{i}]': expected {frames} frames like the other stacks, got {a.shape[0]}"
                )
    if min(spatial) < patch_size:
        raise ValueError(
            f"argument 'patch_size': {patch_size} is larger than the images' (y, x) shape {tuple(spatial)}"
        )
    return spatial, frames


def random_patches(key, *arrays, patch_size, batch_size):
    """Cut the same random square patches out of several aligned arrays.

    Every batch item picks one frame index (shared by all ``(n, y, x)`` stacks;
    ``(y, x)`` arrays are the same for every frame) and one uniformly random
    top-left corner, and cuts a ``patch_size`` square at that place from every
    array, so inputs, targets and ground truths stay registered.

    Args:
        key: JAX PRNG key.
        *arrays: ``(n, y, x)`` stacks with the same ``n`` and/or ``(y, x)``
            images, all with the same ``(y, x)``, each at least ``patch_size``.
        patch_size: static int, side of the square patches (pixels).
        batch_size: static int >= 1.

    Returns:
        A tuple with one ``(batch_size, patch_size, patch_size)`` array per input.

    >>> import jax, jax.numpy as jnp
    >>> a = jnp.arange(2 * 8 * 8.0).reshape(2, 8, 8)
    >>> x, y = random_patches(jax.random.key(0), a, a + 1, patch_size=4, batch_size=3)
    >>> x.shape, bool(jnp.all(y == x + 1))
    ((3, 4, 4), True)
    """
    patch_size = check_int(patch_size, "patch_size", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    arrays = tuple(jnp.asarray(a) for a in arrays)
    (ny, nx), frames = _check_arrays(arrays, patch_size)
    kf, ky, kx = jax.random.split(key, 3)
    idx = jax.random.randint(kf, (batch_size,), 0, frames or 1)
    y0 = jax.random.randint(ky, (batch_size,), 0, ny - patch_size + 1)
    x0 = jax.random.randint(kx, (batch_size,), 0, nx - patch_size + 1)

    def cut(a):
        if a.ndim == 2:
            return jax.vmap(lambda y, x: jax.lax.dynamic_slice(a, (y, x), (patch_size, patch_size)))(y0, x0)
        return jax.vmap(lambda i, y, x: jax.lax.dynamic_slice(a, (i, y, x), (1, patch_size, patch_size))[0])(
            idx, y0, x0
        )

    return tuple(cut(a) for a in arrays)


def _d4(p, k):
    """The k-th (0..7) element of the dihedral group on the last two axes of a square patch."""
    branches = [lambda v, r=r, f=f: jnp.rot90(v[..., ::-1] if f else v, r, axes=(-2, -1))
                for f in (False, True) for r in range(4)]
    return jax.lax.switch(k, branches, p)


def augment_d4(key, *patches):
    """Apply the same random flip/rot90 (one of the 8 symmetries of the square) to aligned patches.

    Args:
        key: JAX PRNG key.
        *patches: ``(batch, p, p)`` arrays (square patches, same batch size);
            item ``i`` of every array gets the same transform.

    Returns:
        A tuple of arrays of the same shapes.

    >>> import jax, jax.numpy as jnp
    >>> p = jnp.arange(2 * 9.0).reshape(2, 3, 3)
    >>> (q,) = augment_d4(jax.random.key(1), p)
    >>> q.shape, sorted(q[0].ravel().tolist()) == sorted(p[0].ravel().tolist())
    ((2, 3, 3), True)
    """
    patches = tuple(jnp.asarray(p) for p in patches)
    if not patches:
        raise ValueError("argument 'patches': expected at least one (batch, p, p) array")
    batch = patches[0].shape[0] if patches[0].ndim == 3 else None
    for i, p in enumerate(patches):
        if p.ndim != 3 or p.shape[-1] != p.shape[-2] or p.shape[0] != batch:
            raise ValueError(
                f"argument 'patches[{i}]': expected square (batch, p, p) patches with the first array's batch, "
                f"got shape {tuple(p.shape)}"
            )
    k = jax.random.randint(key, (batch,), 0, 8)
    return tuple(jax.vmap(_d4)(p, k) for p in patches)
