"""Trains an experiment: `scripts/train.py --config experiments/NAME.py[:preset] --workdir DIR [--config.KEY=VALUE]`.

The experiment module named by --config provides `get_config(preset)` and `train_and_evaluate(config, workdir)`.
Configs are locked, so an override of a key that does not exist fails before anything runs. Rerunning with
the same --workdir resumes from the latest checkpoint there. The workdir's run.json records the experiment and
config, for scripts/predict.py.

Several hosts: run the same command on every host with --distributed (or JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID in the environment; TPU VMs and SLURM job steps are detected), e.g. on two:
  scripts/train.py ... --coordinator_address=HOST0:1234 --num_processes=2 --process_id=0   (1 on the other)
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from scripts import distributed_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment file, experiments/NAME.py[:preset].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, plots and results.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # keep library INFO chatter (orbax, tfds) out of the progress bar
    from research.core import compile_cache
    compile_cache.enable()  # before anything compiles
    from scripts.experiment_file import experiment_path, load_experiment  # after sys.path holds the repo root
    from research.core import compile_check, inference
    from research.core.errors import InputError
    from research.core.trainer import NonFiniteError, Preempted
    experiment = load_experiment(flags.FLAGS["config"].config_filename)
    # Recorded once the checkpoints are this config's (finished or preempted), never by a run that failed.
    record = lambda: inference.write_run_info(_WORKDIR.value, experiment_path(flags.FLAGS["config"].config_filename),
                                            _CONFIG.value)
    check_compiles = os.environ.get(compile_check.ENV) == "1"  # the test suite's compile-once check
    if check_compiles:
        compile_check.start()
    try:
        distributed_flags.start()
        results = experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
        problem = compile_check.problems(compile_check.stop()) if check_compiles else None
        if problem:
            raise InputError(problem)
    except (InputError, NonFiniteError) as e:
        sys.exit(f"error: {e}")
    except Preempted as e:  # SIGTERM: the checkpoint is saved; exit 0 so the scheduler reruns us
        record()
        print(f"preempted: {e}")
        return
    record()
    metrics = results.get("metrics", {})
    print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from scripts.experiment_file import parse_flags
    app.run(main, flags_parser=parse_flags)
