"""Validation perplexity per CPU-minute of the word language model with our LSTM cell and with our QRNN cell,
trained one after the other in this process on the same split (experiments/fortunes_lm.py's default preset):
  .venv/bin/python scripts/benchmark_lm_cells.py [--runs lstm:3,qrnn:3,qrnn:4]

Each run is CELL:EPOCHS (1cycle over that many epochs, a checkpoint and a validation pass every half epoch). For
each validation pass it prints the minutes since the fit began (compilation included; data, the n-gram
baseline and the final test pass not) and the validation perplexity; then, per run, the minutes of the fit and
the best validation perplexity. Take it on an otherwise idle machine.
"""

import os
import tempfile
import time

from absl import app, flags

_RUNS = flags.DEFINE_string("runs", "lstm:3,qrnn:3,qrnn:4", "Comma-separated CELL:EPOCHS runs.")


def curve(workdir: str, fit_start: float) -> list[tuple[float, float]]:
    """(minutes since the fit began, validation perplexity) of each validation pass in metrics.jsonl."""
    from research.core import metric_writer
    return [((row["time"] - fit_start) / 60, row["valid_perplexity"]) for row in metric_writer.read_log(workdir)
            if "valid_perplexity" in row]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from experiments import fortunes_lm
    summary = []
    for spec in _RUNS.value.split(","):
        cell, epochs = spec.split(":")
        config = fortunes_lm.get_config("cpu")
        config.model.cell, config.num_epochs = cell, int(epochs)
        config.checkpoint.every_epochs = 0.5
        config.ngram_orders = (2,)
        config.samples.temperatures = ()
        with tempfile.TemporaryDirectory() as workdir:
            started = time.time()
            results = fortunes_lm.train_and_evaluate(config, workdir)
            timings = results["timings"]
            fit_start = started + timings["data"] + timings["ngram"] + timings["lr_find"]
            points = curve(workdir, fit_start)
        for minutes, perplexity in points:
            print(f"{spec:10s} {minutes:6.2f} min  valid perplexity {perplexity:7.2f}", flush=True)
        summary.append((spec, timings["train"] / 60, min(p for _, p in points), results["metrics"]["test_perplexity"]))
    print("\nrun        fit minutes  best valid perplexity  test perplexity")
    for spec, minutes, valid, test in summary:
        print(f"{spec:10s} {minutes:11.2f}  {valid:21.2f}  {test:15.2f}")


if __name__ == "__main__":
    import sys
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
