"""Scale-out: many items sharded over devices, one image across devices, data larger than memory.

Three modes, each on an existing engine (no home-made scheduler):

* many items (frames, ROIs, particles, training batches): :mod:`jaxsr.parallel.batch`, ``vmap``
  plus :func:`jax.shard_map` over a one-axis ``("batch",)`` mesh;
* one image across devices: :mod:`jaxsr.parallel.halo`, Richardson-Lucy on slabs with a halo
  exchanged by :func:`jax.lax.ppermute` every iteration;
* larger than memory: :mod:`jaxsr.parallel.outofcore`, Dask ``map_overlap`` over Zarr or TIFF
  chunks calling the jitted single-device kernel (optional extra ``pip install jaxsr[dask]``).

Multi-host: call :func:`jax.distributed.initialize` first; the same code then sees every host's devices.
"""

from jaxsr.parallel.batch import BATCH_AXIS, auto_axes, batch_mesh, check_mesh, constrain, sharded_vmap
from jaxsr.parallel.halo import default_slab_mesh, richardson_lucy_sharded
from jaxsr.parallel.outofcore import ChunkedResult, chunk_depth, deconvolve_chunked, map_chunks, richardson_lucy_dask

__all__ = [
    "BATCH_AXIS",
    "ChunkedResult",
    "auto_axes",
    "batch_mesh",
    "check_mesh",
    "chunk_depth",
    "constrain",
    "deconvolve_chunked",
    "default_slab_mesh",
    "map_chunks",
    "richardson_lucy_dask",
    "richardson_lucy_sharded",
    "sharded_vmap",
]
