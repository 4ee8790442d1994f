"""Device mesh and shardings. Data parallel: the batch is split over the `data` axis, parameters are
replicated. One device is a mesh of one, so the same jitted code scales out by adding devices."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    devices = jax.devices()[:num_devices] if num_devices else jax.devices()
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def check_batch_divides(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    if batch_size % mesh.size:
        raise ValueError(f"{what}={batch_size} does not divide across {mesh.size} devices")
