"""Held-out loss per CPU-minute of a language model with our LSTM, GRU or QRNN cell (the learning curves), trained
one after the other in this process on the same split, against the experiment's Kneser-Ney baseline:
  .venv/bin/python scripts/benchmark_lm_cells.py [--runs lstm:3,qrnn:3,qrnn:4]  # the word LM (fortunes_lm.py)
  .venv/bin/python scripts/benchmark_lm_cells.py --experiment experiments/char_rnn.py --runs lstm:3,qrnn:3

Each run is CELL:EPOCHS (1cycle over that many epochs, a checkpoint and a validation pass every half epoch) on the
experiment's default preset. For each validation pass it prints the minutes since the fit began (compilation
included; data, the n-gram baseline and the final test pass not), the validation loss (nats per token) and
perplexity; then, per run, the minutes of the fit and the best validation and the test numbers. The first run
also fits the experiment's n-gram orders (the later ones only a bigram) and prints the chosen model's losses and
its minutes. Take it on an otherwise idle machine.
"""

import os
import tempfile
import time

from absl import app, flags

_RUNS = flags.DEFINE_string("runs", "lstm:3,qrnn:3,qrnn:4", "Comma-separated CELL:EPOCHS runs.")
_EXPERIMENT = flags.DEFINE_string("experiment", "experiments/fortunes_lm.py",
                                  "A language-model experiment file (lm_recipe): fortunes_lm.py or char_rnn.py.")


def curve(workdir: str, fit_start: float) -> list[tuple[float, float]]:
    """(minutes since the fit began, validation loss) of each validation pass in metrics.jsonl."""
    from research.core import metric_writer
    return [((row["time"] - fit_start) / 60, row["valid_loss"]) for row in metric_writer.read_log(workdir)
            if "valid_loss" in row]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import numpy as np

    from scripts.experiment_file import load_experiment
    experiment = load_experiment(_EXPERIMENT.value)
    summary = []
    for i, spec in enumerate(_RUNS.value.split(",")):
        cell, epochs = spec.split(":")
        config = experiment.get_config("cpu")
        config.model.cell, config.num_epochs = cell, int(epochs)
        config.checkpoint.every_epochs = 0.5
        if i:
            config.ngram_orders = (2,)
        config.samples.temperatures = ()
        with tempfile.TemporaryDirectory() as workdir:
            started = time.time()
            results = experiment.train_and_evaluate(config, workdir)
            timings, metrics = results["timings"], results["metrics"]
            fit_start = started + timings["data"] + timings["ngram"] + timings.get("lr_find", 0.0)
            points = curve(workdir, fit_start)
        if not i:
            print(f"Kneser-Ney order {metrics['ngram_order']} (chosen on valid from {tuple(config.ngram_orders)}): "
                  f"valid {metrics['ngram_valid_loss']:.3f} nats, test {metrics['ngram_test_loss']:.3f} nats "
                  f"(perplexity {metrics['ngram_test_perplexity']:.2f}), {timings['ngram'] / 60:.2f} min for all "
                  "orders", flush=True)
        for minutes, loss in points:
            print(f"{spec:10s} {minutes:6.2f} min  valid {loss:.3f} nats  perplexity {np.exp(loss):7.2f}", flush=True)
        summary.append((spec, timings["train"] / 60, min(loss for _, loss in points), metrics["test_loss"]))
    print("\nrun        fit minutes  best valid nats (perplexity)  test nats (perplexity)")
    for spec, minutes, valid, test in summary:
        print(f"{spec:10s} {minutes:11.2f}  {valid:15.3f} ({np.exp(valid):7.2f})  {test:10.3f} ({np.exp(test):7.2f})")


if __name__ == "__main__":
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
