"""ULMFiT's stage 1: trains the general-English language model once and stores it as a named artifact in the cache,
so later runs say `--config.pretrained=NAME` (experiments/fortunes_classifier.py) instead of a workdir:
  .venv/bin/python scripts/pretrain_lm.py --workdir runs/general_lm
It runs experiments/fortunes_lm.py:general (research/text/general_corpus.py's corpus, built first when missing)
as scripts/train.py would, then publishes the best checkpoint as ~/.cache/fastjax/pretrained/NAME/
(research/text/pretrained_lm.py: params, vocabulary, sizes, SHA-256 manifest). Rerunning with the same --workdir
resumes an interrupted pretraining; `--config.KEY=VALUE` overrides the preset (another experiment's language
model too: `--config experiments/fortunes_lm.py:long`).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file("config", os.path.join(_REPO, "experiments", "fortunes_lm.py:general"),
                                          "Language-model experiment file and preset.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the pretraining run (checkpoints, logs, results).")
_NAME = flags.DEFINE_string("name", "general-english-v1-awd", "The artifact's name in the cache.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from research.core import compile_cache
    compile_cache.enable()
    from scripts.experiment_file import experiment_path, load_experiment
    from research.core import inference
    from research.core.errors import InputError
    from research.core.trainer import NonFiniteError, Preempted
    from research.text import pretrained_lm
    config_path = flags.FLAGS["config"].config_filename
    experiment = load_experiment(config_path)
    try:
        results = experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
        inference.write_run_info(_WORKDIR.value, experiment_path(config_path), _CONFIG.value)
        manifest = pretrained_lm.publish(_WORKDIR.value, _NAME.value)
    except (InputError, NonFiniteError) as e:
        sys.exit(f"error: {e}")
    except Preempted as e:
        inference.write_run_info(_WORKDIR.value, experiment_path(config_path), _CONFIG.value)
        print(f"preempted: {e} (rerun the same command to resume)")
        return
    metrics = results.get("metrics", {})
    print(f"published {manifest['name']} (vocabulary {manifest['vocab_size']}, "
          f"test perplexity {metrics.get('test_perplexity', float('nan')):.1f}) in "
          f"{os.path.join(pretrained_lm.artifacts_dir(), manifest['name'])}")


if __name__ == "__main__":
    sys.path.insert(0, _REPO)
    from scripts.experiment_file import parse_flags
    app.run(main, flags_parser=parse_flags)
