"""Tokens per second of three recurrences in one run, at equal sizes, on this machine's CPU:
  .venv/bin/python scripts/benchmark_recurrence.py [--batch 32 --bptt 70 --embed 200 --hidden 400 --layers 3
      --vocab 8000 --steps 5]

- our AWD-LSTM language model with the LSTM cell (research/text/rnn.py, a `lax.scan` with the hidden matmul
  inside),
- the same model with the QRNN cell (research/text/qrnn.py, gates as one matmul, elementwise f-pooling),
- PyTorch's `nn.LSTM` layers of the same sizes (embedding -> layers of hidden, ..., embed units -> tied decoder).
Each train step is forward, backward and an Adam update on one BPTT window, the state carried (detached) to the
next; no dropout anywhere, so the three do the same work but for the recurrence. Then the QRNN's two pooling
scans (`lax.scan` against `lax.associative_scan`) on one layer, forward and backward. Prints ms per step,
tokens per second and the ratios to PyTorch's LSTM. Needs torch (the venv's test extra).
"""

import time

from absl import app, flags

_BATCH = flags.DEFINE_integer("batch", 32, "Rows per step.")
_BPTT = flags.DEFINE_integer("bptt", 70, "Time steps per window.")
_EMBED = flags.DEFINE_integer("embed", 200, "Embedding size (and the last layer's units: the decoder is tied).")
_HIDDEN = flags.DEFINE_integer("hidden", 400, "Units of the other layers.")
_LAYERS = flags.DEFINE_integer("layers", 3, "Recurrent layers.")
_VOCAB = flags.DEFINE_integer("vocab", 8000, "Vocabulary size.")
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after 2 untimed).")


def seconds_per_step(step, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per call of `step`, after two untimed calls (compilation, warm-up)."""
    for _ in range(2):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def jax_lm_step(cell: str, B: int, T: int, E: int, H: int, L: int, V: int):
    """A jitted train step of our AWD-LSTM (no dropout) with `cell`, on random tokens."""
    import jax
    import jax.numpy as jnp
    import optax
    from research.core import steps
    from research.core.train_state import TrainState
    from research.text import language_model
    from research.text.awd_lstm import AWDLSTM
    model = AWDLSTM(V, E, H, L, embed_drop=0.0, input_drop=0.0, hidden_drop=0.0, weight_drop=0.0, output_drop=0.0,
                    cell=cell)
    tokens = jax.random.randint(jax.random.key(0), (B, T), 0, V)
    batch = {"input": tokens, "target": jnp.roll(tokens, -1, 1), "token_mask": jnp.ones((B, T), bool),
             "reset": jnp.zeros(B, bool)}
    variables = jax.jit(lambda rng: model.init(rng, tokens, batch["reset"], batch["token_mask"]))(jax.random.key(0))
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats={},
                              tx=optax.adam(1e-3), carry=model.initial_carry(B))
    train_step = jax.jit(steps.make_train_step(language_model.task()), donate_argnums=0)
    holder = {"state": state}

    def step():
        holder["state"], metrics = train_step(holder["state"], batch, jax.random.key(0))
        jax.block_until_ready(metrics)

    return step


def torch_lm_step(B: int, T: int, E: int, H: int, L: int, V: int):
    """The same language model with PyTorch's nn.LSTM layers (one per size, as the AWD-LSTM stacks them)."""
    import torch
    sizes = [H if i < L - 1 else E for i in range(L)]
    embed = torch.nn.Embedding(V, E)
    layers = torch.nn.ModuleList([torch.nn.LSTM(E if i == 0 else sizes[i - 1], size, batch_first=True)
                                  for i, size in enumerate(sizes)])
    out_bias = torch.nn.Parameter(torch.zeros(V))
    optimizer = torch.optim.Adam([*embed.parameters(), *layers.parameters(), out_bias], 1e-3)
    tokens = torch.randint(0, V, (B, T))
    targets = torch.roll(tokens, -1, 1)
    holder = {"state": [(torch.zeros(1, B, s), torch.zeros(1, B, s)) for s in sizes]}

    def step():
        optimizer.zero_grad()
        x, new_state = embed(tokens), []
        for layer, state in zip(layers, holder["state"]):
            x, (h, c) = layer(x, state)
            new_state.append((h.detach(), c.detach()))
        logits = x @ embed.weight.T + out_bias
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        holder["state"] = new_state

    return step


def pooling_step(scan: str, B: int, T: int, H: int):
    """Forward and backward of one QRNN layer's f-pooling (`scan` = "sequential" or "associative")."""
    import jax
    import jax.numpy as jnp
    from research.text import qrnn
    pool = {"sequential": qrnn.f_pool_sequential, "associative": qrnn.f_pool_associative}[scan]
    keys = jax.random.split(jax.random.key(0), 3)
    f = jax.nn.sigmoid(jax.random.normal(keys[0], (B, T, H)))
    z = jnp.tanh(jax.random.normal(keys[1], (B, T, H)))
    c0 = jax.random.normal(keys[2], (B, H))
    grad = jax.jit(jax.grad(lambda f, z: jnp.sum(pool(f, z, c0) ** 2), argnums=(0, 1)))

    def step():
        jax.block_until_ready(grad(f, z))

    return step


def main(argv):
    del argv
    B, T, E, H, L, V = (_BATCH.value, _BPTT.value, _EMBED.value, _HIDDEN.value, _LAYERS.value, _VOCAB.value)
    tokens = B * T
    print(f"language-model train step: batch {B}, bptt {T}, embed {E}, hidden {H}, {L} layers, vocab {V}; "
          f"{_STEPS.value} timed steps each (one run, this machine's CPU)")
    timed = {"ours, LSTM": seconds_per_step(jax_lm_step("lstm", B, T, E, H, L, V), _STEPS.value),
             "ours, QRNN": seconds_per_step(jax_lm_step("qrnn", B, T, E, H, L, V), _STEPS.value),
             "PyTorch nn.LSTM": seconds_per_step(torch_lm_step(B, T, E, H, L, V), _STEPS.value)}
    reference = tokens / timed["PyTorch nn.LSTM"][0]
    print(f"{'':18s} {'ms/step':>9s} {'CPU ms':>9s} {'tokens/s':>10s} {'vs PyTorch LSTM':>16s}")
    for name, (wall, cpu) in timed.items():
        rate = tokens / wall
        print(f"{name:18s} {wall * 1e3:9.1f} {cpu * 1e3:9.1f} {rate:10.0f} {rate / reference:15.2f}x")
    print(f"QRNN f-pooling alone (one layer of {H}, forward + backward):")
    for scan in ("sequential", "associative"):
        wall, _ = seconds_per_step(pooling_step(scan, B, T, H), _STEPS.value)
        print(f"  {scan:12s} {wall * 1e3:8.2f} ms")


if __name__ == "__main__":
    app.run(main)
