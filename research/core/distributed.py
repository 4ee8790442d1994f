"""Several processes (one per host, or per GPU) running the same program on one global device mesh.

Scripts call `maybe_initialize(...)` before anything touches a device. It starts jax's distributed runtime
when it is asked for (the scripts' --distributed flag), when the environment configures it
(JAX_COORDINATOR_ADDRESS, with JAX_NUM_PROCESSES and JAX_PROCESS_ID), or on a cluster that jax configures
itself: a SLURM job step of several tasks (`srun`), a Cloud TPU VM. Afterwards `jax.devices()` lists every
process's devices; each process feeds its own devices, process 0 alone writes logs and plots, and all of them
write checkpoints together (orbax).

On CPU, collectives between processes need an implementation: gloo (jax's `jax_cpu_collectives_implementation`,
set here explicitly), which is how the tests run two processes on localhost.
"""

import glob
import importlib.util
import os

import jax

from research.core.errors import InputError

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # host:port of process 0 (read by jax itself too)
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def detected_cluster() -> str | None:
    """"slurm" inside a SLURM job step of several tasks, "tpu" on a Cloud TPU VM, else None. Reads only the
    environment and /dev, so it is safe before jax touches a device."""
    if all(v in os.environ for v in _SLURM_VARS) and int(os.environ["SLURM_NTASKS"]) > 1:
        return "slurm"
    if importlib.util.find_spec("libtpu") is not None and (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
        return "tpu"
    return None


def requested(flag: bool = False) -> bool:
    """Whether to start the distributed runtime: the flag, the environment, or a detected cluster."""
    return flag or ENV_COORDINATOR in os.environ or detected_cluster() is not None


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Starts jax's distributed runtime (once). Arguments left None come from the environment variables above,
    else from jax's cluster detection (TPU VM, SLURM, Open MPI)."""
    if jax.distributed.is_initialized():
        return
    num_processes = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    process_id = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    except (ValueError, TypeError) as e:
        message = " ".join(str(e).split())
        raise InputError(f"distributed initialisation failed: {message} (give --coordinator_address, "
                         f"--num_processes and --process_id, or set {ENV_COORDINATOR}, {ENV_NUM_PROCESSES} "
                         f"and {ENV_PROCESS_ID})") from e


def maybe_initialize(flag: bool = False, coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
    """`initialize(...)` if `requested(flag)` or any argument is given; returns whether it did."""
    given = (coordinator_address, num_processes, process_id)
    if not requested(flag) and all(v is None for v in given):
        return False
    initialize(*given)
    return True


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from None
