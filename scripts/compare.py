"""A variant against its baseline over K seeds: trains both, then writes a table (mean, std, 95% confidence
interval, Welch's t-test p-value for every final metric) and a plot of the learning curves with bands.

  .venv/bin/python scripts/compare.py --baseline experiments/fashion_mnist.py \\
      --variant experiments/fashion_mnist_sgdr.py --seeds 3 --workdir runs/compare_sgdr \\
      [--baseline.KEY=VALUE ...] [--variant.KEY=VALUE ...]

Seeds are config.seed .. config.seed + K - 1 on each side, so both sides see the same initialisation keys and
data orders. A side whose experiment has `train_and_evaluate_seeds(config, workdir, num_seeds)` trains its K
seeds in one vmapped program (research/seeds.py) in DIR/SIDE/; any other experiment trains them one after the
other with `train_and_evaluate`, in DIR/SIDE/seed_S/ (the same numbers: member k of the vmapped program is the
run --config.seed=S); --sequential trains every side that way (faster on XLA:CPU, where vmapped convolutions
are slow: README). Rerunning the command resumes: finished sides and seeds are read back, not retrained.

Writes DIR/compare.md, DIR/compare.csv (one row per metric) and DIR/compare.png (training loss and every
validation metric against the step: the mean over seeds, with a band of +-1 standard deviation).
"""

import csv
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_BASELINE = config_flags.DEFINE_config_file("baseline", None, "Baseline experiment, experiments/A.py[:preset].",
                                            lock_config=True)
_VARIANT = config_flags.DEFINE_config_file("variant", None, "Variant experiment, experiments/B.py[:preset].",
                                           lock_config=True)
_SEEDS = flags.DEFINE_integer("seeds", 3, "Number of seeds on each side (config.seed onwards).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for both sides' runs and the comparison.")
_SEQUENTIAL = flags.DEFINE_bool("sequential", False, "Train the seeds one after the other even where an experiment "
                                "can vmap them (faster on XLA:CPU, whose vmapped convolutions are slow).")
flags.mark_flags_as_required(["baseline", "variant", "workdir"])

SIDES = ("baseline", "variant")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)
    from research.core import compile_cache
    compile_cache.enable()  # before anything compiles
    from research.core.errors import InputError
    from research.core.trainer import NonFiniteError, Preempted
    from scripts.experiment_file import load_experiment  # after sys.path holds the repository root
    try:
        per_side = {}
        for side, config in zip(SIDES, (_BASELINE.value, _VARIANT.value)):
            module = load_experiment(flags.FLAGS[side].config_filename)
            per_side[side] = run_side(module, config, os.path.join(_WORKDIR.value, side), _SEEDS.value,
                                      _SEQUENTIAL.value)
        print(compare(per_side["baseline"], per_side["variant"], _WORKDIR.value,
                      labels=[flags.FLAGS[side].config_filename for side in SIDES]))
    except (InputError, NonFiniteError) as e:
        sys.exit(f"error: {e}")
    except Preempted as e:  # SIGTERM: the current run's checkpoint is saved; rerun to resume
        print(f"preempted: {e}")


def run_side(module, config, workdir: str, num_seeds: int, sequential: bool = False) -> list[dict]:
    """Trains (or reads back) K seeds of one side; returns [{"seed", "metrics", "curves"}] per seed, where
    curves = {metric: (steps, values)} from the run's metrics.jsonl."""
    from research.core import metric_writer
    seeds = [config.seed + k for k in range(num_seeds)]
    if module.CAPABILITIES.seeds and not sequential:
        results = _read_results(workdir)
        if results is None or [s["seed"] for s in results.get("per_seed", [])] != seeds:
            results = module.train_and_evaluate_seeds(config, workdir, num_seeds)
        logged = metric_writer.read_log(workdir)
        return [{"seed": s["seed"], "metrics": s["metrics"],
                 "curves": member_curves(logged, f"seed{s['seed']}")} for s in results["per_seed"]]
    runs = []
    for seed in seeds:
        seed_dir = os.path.join(workdir, f"seed_{seed}")
        results = _read_results(seed_dir)
        if results is None:
            seed_config = config.copy_and_resolve_references()
            seed_config.seed = seed
            results = module.train_and_evaluate(seed_config, seed_dir)
        runs.append({"seed": seed, "metrics": results["metrics"],
                     "curves": member_curves(metric_writer.read_log(seed_dir))})
    return runs


def _read_results(workdir: str) -> dict | None:
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def member_curves(logged: list[dict], member: str | None = None) -> dict[str, tuple[list, list]]:
    """{metric: (steps, values)} for the training loss and every validation metric, of one run or (`member`)
    one member of a vmapped run (logged as `metric/member`)."""
    curves = {}
    for row in logged:
        for key, value in row.items():
            name, _, of = key.partition("/")
            if (of or None) != member or not (name == "train_loss" or name.startswith("valid_")):
                continue
            steps, values = curves.setdefault(name, ([], []))
            steps.append(row["step"])
            values.append(value)
    return curves


def compare(baseline: list[dict], variant: list[dict], workdir: str, labels=("baseline", "variant")) -> str:
    """Writes compare.md, compare.csv and compare.png into workdir; returns the Markdown table."""
    rows = table_rows(baseline, variant)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "compare.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    markdown = markdown_table(rows, labels, len(baseline), len(variant))
    with open(os.path.join(workdir, "compare.md"), "w") as f:
        f.write(markdown)
    plot_curves(baseline, variant, os.path.join(workdir, "compare.png"), labels)
    return markdown


def table_rows(baseline: list[dict], variant: list[dict]) -> list[dict]:
    """One row per final metric both sides report: each side's n, mean, std and 95% CI, the difference of the
    means (variant - baseline), Welch's t, degrees of freedom and two-sided p."""
    from research.core import stats
    names = [name for name, value in baseline[0]["metrics"].items()
             if isinstance(value, (int, float)) and all(name in run["metrics"] for run in baseline + variant)]
    rows = []
    for name in names:
        row = {"metric": name}
        for side, runs in (("baseline", baseline), ("variant", variant)):
            s = stats.summarize([run["metrics"][name] for run in runs])
            row.update({f"{side}_n": s.n, f"{side}_mean": s.mean, f"{side}_std": s.std,
                        f"{side}_ci_low": s.ci_low, f"{side}_ci_high": s.ci_high})
        test = stats.welch_t_test([run["metrics"][name] for run in baseline], [run["metrics"][name] for run in variant])
        row.update({"difference": row["variant_mean"] - row["baseline_mean"], "t": test.t, "df": test.df, "p": test.p})
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], labels, num_baseline: int, num_variant: int) -> str:
    lines = [f"baseline: `{labels[0]}` ({num_baseline} seeds); variant: `{labels[1]}` ({num_variant} seeds); "
             "mean +- std, [95% CI of the mean], Welch's two-sided t-test", "",
             "| metric | baseline | baseline 95% CI | variant | variant 95% CI | difference | p |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['metric']} | {r['baseline_mean']:.4f} +- {r['baseline_std']:.4f} | "
                     f"[{r['baseline_ci_low']:.4f}, {r['baseline_ci_high']:.4f}] | "
                     f"{r['variant_mean']:.4f} +- {r['variant_std']:.4f} | "
                     f"[{r['variant_ci_low']:.4f}, {r['variant_ci_high']:.4f}] | {r['difference']:+.4f} | "
                     f"{r['p']:.3g} |")
    return "\n".join(lines) + "\n"


def plot_curves(baseline: list[dict], variant: list[dict], path: str, labels) -> None:
    """One panel per curve (training loss, validation metrics): each side's mean over seeds, +-1 std band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    names = [n for n in baseline[0]["curves"] if all(n in run["curves"] for run in baseline + variant)]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for runs, label, color in ((baseline, labels[0], "tab:blue"), (variant, labels[1], "tab:orange")):
            length = min(len(run["curves"][name][1]) for run in runs)
            steps = np.asarray(runs[0]["curves"][name][0][:length])
            values = np.asarray([run["curves"][name][1][:length] for run in runs])
            mean, std = values.mean(0), values.std(0, ddof=1) if len(runs) > 1 else np.zeros(length)
            ax.plot(steps, mean, color=color, marker="o" if length < 10 else None, label=os.path.basename(label))
            ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.25)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"mean over seeds, band +-1 std ({len(baseline)} and {len(variant)} seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from scripts.experiment_file import parse_flags
    app.run(main, flags_parser=parse_flags)
