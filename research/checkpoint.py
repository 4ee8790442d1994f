"""Orbax checkpoints of the train state plus a small JSON record (step, epoch, config name, ...).

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a crash or
interrupt mid-save never replaces the previous good checkpoint.
"""

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 2):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)), force=True)

    def restore(self, step: int, like_state) -> tuple[object, dict]:
        """Restores into the structure, shapes and shardings of `like_state`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                     meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
