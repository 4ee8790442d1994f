"""Predicted cost of one training step on accelerators we have not run on, from XLA's own analyses:

  .venv/bin/python scripts/predict_costs.py [--models lesson1,resnet50_224,...] [--markdown docs_table.md]

For each model of scripts/bench.py (at its accelerator batch, bfloat16 compute where the model has it), the train
step is lowered on this CPU host for `cuda` (the same program as for `tpu` but for layouts) and XLA's cost
analysis gives its FLOPs and the bytes its unfused operations touch; the step compiled for the CPU gives the
sizes of its arguments, outputs and temporaries (memory analysis), and a second batch size gives how they grow
with the batch. Per card, with its published peak dense bfloat16 rate and memory bandwidth:
- `compute ms` = FLOPs / peak: no step can be faster;
- `roofline ms` = max(compute, minimal bytes / bandwidth), the minimal bytes being the step's inputs read once and
  its outputs written once: the lower bound the table quotes;
- `unfused ms` = the unfused operations' bytes / bandwidth: what the step would cost if XLA fused nothing, an
  upper reference for the memory side;
- the largest batch whose arguments, outputs and temporaries fit 16 GB and 80 GB (a linear fit in the batch).
These are predictions, not measurements: scripts/device_check.py measures them the day a GPU is lent.
"""

import os
import sys

from absl import app, flags

_MODELS = flags.DEFINE_list("models", None, "Models (default: all of MODELS).")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Also write the table to this file.")

# name -> (description, accelerator batch, a smaller batch for the memory fit)
MODELS = {
    "lesson1": ("lesson-1 small ResNet, 28x28x1", 512, 256),
    "resnet18_64": ("ResNet-18, 64x64x3", 256, 128),
    "resnet34_128": ("ResNet-34, 128x128x3", 128, 64),
    "resnet18_224": ("ResNet-18, 224x224x3", 128, 64),
    "resnet50_224": ("ResNet-50, 224x224x3", 128, 64),
    "unet": ("segmentation's U-Net, 64x64x1, 11 classes", 128, 64),
    "tabular": ("entity-embedding MLP (txhousing sizes)", 1024, 512),
    "collab": ("dot product + biases (MovieLens-100k sizes)", 1024, 512),
    "char_rnn": ("2x256 LSTM, 100 symbols, BPTT 128", 128, 64),
}
# Published peak dense bfloat16 FLOP/s and memory bandwidth (bytes/s), and memory (bytes).
CARDS = {
    "A100 80GB SXM": (312e12, 2.039e12, 80e9),
    "H100 SXM": (989e12, 3.35e12, 80e9),
    "TPU v5e": (197e12, 0.819e12, 16e9),
}
CAPACITIES = {"16 GB": 16e9, "80 GB": 80e9}


def analyse(name: str, batch: int) -> dict:
    """FLOPs and unfused bytes of the step lowered for cuda; argument, output and temporary bytes of the step
    compiled here."""
    import jax
    from scripts.bench_models import jax_parts
    step, state, batch_data, rng = jax_parts(name, batch, mixed_precision=True)
    traced = jax.jit(step).trace(state, batch_data, rng)
    cost = traced.lower(lowering_platforms=("cuda",)).cost_analysis()
    memory = traced.lower().compile().memory_analysis()
    return {"flops": float(cost["flops"]), "unfused_bytes": float(cost["bytes accessed"]),
            "io_bytes": float(memory.argument_size_in_bytes + memory.output_size_in_bytes),
            "peak_bytes": float(memory.argument_size_in_bytes + memory.output_size_in_bytes
                                + memory.temp_size_in_bytes - memory.alias_size_in_bytes)}


def predict(name: str) -> dict:
    description, batch, small = MODELS[name]
    big_costs, small_costs = analyse(name, batch), analyse(name, small)
    per_example = (big_costs["peak_bytes"] - small_costs["peak_bytes"]) / (batch - small)
    fixed = big_costs["peak_bytes"] - per_example * batch
    row = {"name": name, "description": description, "batch": batch, **big_costs}
    row["max_batch"] = {label: int((capacity - fixed) // per_example) if per_example > 0 else None
                        for label, capacity in CAPACITIES.items()}
    row["cards"] = {}
    for card, (peak_flops, bandwidth, _) in CARDS.items():
        compute = big_costs["flops"] / peak_flops
        row["cards"][card] = {"compute_ms": 1e3 * compute,
                              "roofline_ms": 1e3 * max(compute, big_costs["io_bytes"] / bandwidth),
                              "unfused_ms": 1e3 * big_costs["unfused_bytes"] / bandwidth}
    return row


def markdown(rows: list[dict]) -> str:
    header = ("| model | batch | GFLOP per step | unfused GB | in+out GB | peak GB | max batch 16 / 80 GB | "
              + " | ".join(f"{card}: roofline ms (unfused ms)" for card in CARDS) + " |")
    lines = [header, "|" + "---|" * (7 + len(CARDS))]
    fits = lambda n: "any" if n is None or n > 1_000_000 else str(n)  # memory per example next to nothing
    for r in rows:
        cards = " | ".join(f"{r['cards'][c]['roofline_ms']:.3g} ({r['cards'][c]['unfused_ms']:.3g})" for c in CARDS)
        lines.append(f"| {r['description']} | {r['batch']} | {r['flops'] / 1e9:.3g} | {r['unfused_bytes'] / 1e9:.3g} "
                     f"| {r['io_bytes'] / 1e9:.3g} | {r['peak_bytes'] / 1e9:.3g} | "
                     f"{fits(r['max_batch']['16 GB'])} / {fits(r['max_batch']['80 GB'])} | {cards} |")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    names = _MODELS.value or list(MODELS)
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        raise app.UsageError(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    rows = []
    for name in names:
        rows.append(predict(name))
        print(f"{name}: {rows[-1]['flops'] / 1e9:.3g} GFLOP, peak {rows[-1]['peak_bytes'] / 1e9:.3g} GB", flush=True)
    table = markdown(rows)
    print(table)
    if _MARKDOWN.value:
        with open(_MARKDOWN.value, "w") as f:
            f.write(table)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
