"""The flags that start jax's distributed runtime (one process per host), shared by the scripts that train.

Importing this module defines --distributed, --coordinator_address, --num_processes and --process_id; call
`start()` in `main`, before the first jax computation.
"""

from absl import flags

_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Start jax's distributed runtime (one process per host). "
                                 "Also on when JAX_COORDINATOR_ADDRESS is set, in a SLURM job step, on a TPU VM.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (implies --distributed).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id, 0..num_processes-1 (implies --distributed).")


def start() -> bool:
    """Starts the runtime when the flags, the environment, SLURM or a TPU VM ask for it; returns whether it did.
    Incomplete settings raise `research.errors.InputError`."""
    from research.core import distributed
    return distributed.maybe_initialize(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                                        _PROCESS_ID.value)
