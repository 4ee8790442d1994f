"""Device mesh and shardings over two axes, `data` and `fsdp`.

The batch is split over both axes (every device trains on its own slice). Parameters and optimizer state are
replicated, except leaves large enough to matter, which `state_shardings` splits over `fsdp` along one
dimension (FSDP / ZeRO-3 style: XLA all-gathers them where they are used and reduce-scatters their gradients).
`fsdp_devices=1` is pure data parallelism. One device is a 1x1 mesh, and several processes (hosts) share one
global mesh, so the same jitted code runs on 1 or N devices and 1 or N hosts.
"""

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from research.core.errors import InputError

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)
# Leaves with fewer elements stay replicated: splitting them saves little memory and costs a collective each.
MIN_FSDP_SIZE = 2 ** 14


def make_mesh(num_devices: int | None = None, fsdp_devices: int = 1) -> Mesh:
    """A (num_devices / fsdp_devices) x fsdp_devices mesh over the first `num_devices` devices (None: all).

    The fsdp axis is the inner one, so its groups lie within a host when fsdp_devices <= local devices."""
    devices = jax.devices()
    if num_devices:
        if num_devices > len(devices):
            raise InputError(f"num_devices={num_devices}, but only {len(devices)} devices are available")
        if jax.process_count() > 1 and num_devices != len(devices):
            raise InputError(f"num_devices={num_devices}: with {jax.process_count()} processes the mesh must "
                             f"hold all {len(devices)} devices (num_devices=0)")
        devices = devices[:num_devices]
    if fsdp_devices < 1 or len(devices) % fsdp_devices:
        raise InputError(f"fsdp_devices={fsdp_devices} does not divide the {len(devices)} devices of the mesh")
    grid = mesh_utils.create_device_mesh((len(devices) // fsdp_devices, fsdp_devices), devices)
    return Mesh(grid, (DATA_AXIS, FSDP_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over all devices (both axes)."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def leaf_sharding(shape: tuple[int, ...], mesh: Mesh, min_size: int = MIN_FSDP_SIZE) -> NamedSharding:
    """Split over `fsdp` along the largest dimension the axis divides (the last of equals: a kernel's output
    features) if the leaf has at least `min_size` elements; else replicated."""
    fsdp = mesh.shape[FSDP_AXIS]
    if fsdp > 1 and int(np.prod(shape)) >= min_size:
        dims = [d for d, size in enumerate(shape) if size % fsdp == 0]
        if dims:
            dim = max(dims, key=lambda d: (shape[d], d))
            return NamedSharding(mesh, PartitionSpec(*[FSDP_AXIS if d == dim else None for d in range(len(shape))]))
    return replicated(mesh)


def state_shardings(state, mesh: Mesh, min_size: int = MIN_FSDP_SIZE):
    """The shardings of a train state (or any pytree of arrays) on `mesh`: one `leaf_sharding` per leaf, except
    a train state's recurrent `carry`, which is batch-major and so split over the devices like a batch."""
    shardings = jax.tree.map(lambda leaf: leaf_sharding(np.shape(leaf), mesh, min_size), state)
    if getattr(state, "carry", None) is not None:
        shardings = shardings.replace(carry=jax.tree.map(lambda _: batch_sharded(mesh), state.carry))
    return shardings


def host_to_global(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array that every process holds in full (a small dataset, an eval batch).

    Each process copies only the pieces its own devices hold: no traffic between processes."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def check_batch_divides(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    if batch_size % mesh.size:
        raise InputError(f"{what}={batch_size} does not divide across {mesh.size} devices")
