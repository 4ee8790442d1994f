"""Text written by a trained language model (experiments/char_rnn.py, experiments/fortunes_lm.py):
  .venv/bin/python scripts/generate.py --workdir runs/char_rnn --prompt "The " --temperature 0.5 --length 400 \\
      [--top_k 10] [--seed 0]

Reads the run's experiment and config (workdir/run.json), restores its best checkpoint and vocabulary, reads
the prompt and samples `length` tokens (characters or words) from softmax(logits / temperature), restricted to
the top_k most likely when top_k > 0. The same seed writes the same text.
"""

import os
import sys

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_PROMPT = flags.DEFINE_string("prompt", "", "Text the sample continues.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Softmax temperature (lower: more conservative).")
_LENGTH = flags.DEFINE_integer("length", 400, "Tokens to write.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens only (0: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed of the sample.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from research.core import compile_cache
    compile_cache.enable()  # before anything compiles
    import ml_collections
    from research.core import inference
    from research.core.errors import InputError
    from scripts.experiment_file import load_experiment  # after sys.path holds the repository root
    try:
        if _TEMPERATURE.value <= 0 or _LENGTH.value < 1:
            raise InputError(f"--temperature must be > 0 and --length >= 1, got {_TEMPERATURE.value} and "
                             f"{_LENGTH.value}")
        experiment_file, config = inference.read_run_info(_WORKDIR.value)
        experiment = load_experiment(experiment_file)
        if not experiment.CAPABILITIES.generate:
            raise InputError(f"{experiment_file} does not write text (its CAPABILITIES has generate=False)")
        written = experiment.generate(ml_collections.ConfigDict(config), _WORKDIR.value, _PROMPT.value,
                                      _TEMPERATURE.value, _LENGTH.value, _TOP_K.value, _SEED.value)
    except InputError as e:
        sys.exit(f"error: {e}")
    print(_PROMPT.value + written)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
