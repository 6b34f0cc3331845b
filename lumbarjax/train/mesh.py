"""The device mesh and batch sharding for data parallelism.

Data parallelism is plain ``jax.jit`` over a 1-D ``Mesh`` with a ``"data"`` axis: the batch is
sharded along its leading axis (``P("data")``) and the train state is replicated (``P()``).
``jit`` sees the *global* batch, so a loss averaged over the batch is averaged over all devices
(and hosts) and a sharded step computes the same numbers as an unsharded one. The same code runs
on one CPU, N forced CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), GPUs
and many hosts (after ``jax.distributed.initialize()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lumbarjax.errors import ConfigError

__all__ = ["DATA_AXIS", "make_mesh", "batch_sharding", "replicated_sharding", "shard_batch",
           "maybe_initialize_distributed"]

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """1-D mesh with axis ``"data"`` over ``devices`` (default: all global devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``"data"``; other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device (the train state)."""
    return NamedSharding(mesh, P())


def shard_batch(batch: Mapping[str, Any], mesh: Mesh) -> dict:
    """Host-local numpy batch -> global ``jax.Array`` batch sharded over ``"data"``.

    With P processes each holding ``B_local`` rows, the global batch has
    ``B = P * B_local`` rows (process ``p``'s rows land on its own devices).

    Raises:
      ConfigError: when the global batch size is not divisible by the number of devices,
        or the leaves disagree on ``B``.
    """
    leaves, treedef = jax.tree.flatten(batch)
    if not leaves:
        raise ConfigError("shard_batch: empty batch")
    arrays = []
    sizes = set()
    for path, leaf in jax.tree.flatten_with_path(batch)[0]:
        a = np.asarray(leaf)
        if a.dtype == object or a.dtype.kind in "USO":
            raise ConfigError(f"shard_batch: batch[{jax.tree_util.keystr(path)}] has dtype "
                              f"{a.dtype}; only numeric arrays can go to devices (no ids/text)")
        if a.ndim == 0:
            raise ConfigError(f"shard_batch: batch[{jax.tree_util.keystr(path)}] is a scalar; "
                              "every batch entry needs a leading batch axis B")
        sizes.add(a.shape[0])
        arrays.append(a)
    if len(sizes) != 1:
        raise ConfigError(f"shard_batch: batch entries disagree on the batch size: {sorted(sizes)}")
    local_b = sizes.pop()
    global_b = local_b * jax.process_count()
    n_dev = mesh.size
    if global_b % n_dev:
        raise ConfigError(
            f"batch size {global_b} (= {local_b} per process x {jax.process_count()} "
            f"processes) is not divisible by the number of devices {n_dev} on mesh axis "
            f"'{DATA_AXIS}'; use a batch size that is a multiple of {n_dev}"
        )
    sharding = batch_sharding(mesh)
    out = [jax.make_array_from_process_local_data(sharding, a) for a in arrays]
    return jax.tree.unflatten(treedef, out)


def maybe_initialize_distributed(flag: bool, *, coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
    """``jax.distributed.initialize()`` when ``flag``; once. Without arguments jax detects the
    cluster (SLURM, Open MPI, Cloud TPU; ``JAX_COORDINATOR_ADDRESS`` for the address);
    ``coordinator_address`` ("host:port" of process 0), ``num_processes`` and ``process_id``
    name it explicitly (plain multi-host launches). On CPU the processes' collectives go over
    gloo (jax's default ``jax_cpu_collectives_implementation``)."""
    if flag and not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
