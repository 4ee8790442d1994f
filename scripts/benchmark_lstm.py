"""Our LSTM language-model train step (research/text/char_rnn.py: lax.scan, jitted) against PyTorch's
`nn.LSTM` of the same sizes, on this machine's CPU, one run each:
  .venv/bin/python scripts/benchmark_lstm.py [--batch 64 --bptt 128 --hidden 512 --layers 2 --vocab 100 --steps 10]

Both do the same work per step: embedding -> stacked LSTM -> linear to the vocabulary -> cross-entropy,
backward, Adam update, the state carried to the next step (detached). Prints ms per step, characters per
second, and the CPU seconds per step (ms of CPU time: what the step costs when other jobs share the machine).
"""

import os
import sys
import time

from absl import app, flags

_BATCH = flags.DEFINE_integer("batch", 64, "Rows per step.")
_BPTT = flags.DEFINE_integer("bptt", 128, "Time steps per window.")
_HIDDEN = flags.DEFINE_integer("hidden", 512, "LSTM units per layer.")
_LAYERS = flags.DEFINE_integer("layers", 2, "LSTM layers.")
_VOCAB = flags.DEFINE_integer("vocab", 100, "Vocabulary size.")
_EMBED = flags.DEFINE_integer("embed", 64, "Embedding size.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after 2 untimed).")


def _time(step, steps: int) -> tuple[float, float]:
    for _ in range(2):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def jax_parts(B, T, H, L, V, E):
    """(train_step, state, batch) of our character LSTM LM on random tokens."""
    import jax
    import jax.numpy as jnp
    import optax
    from research.core import steps
    from research.core.train_state import TrainState
    from research.text import language_model
    from research.text.char_rnn import CharRNN
    model = CharRNN(V, E, (H,) * L, "lstm")
    tokens = jax.random.randint(jax.random.key(0), (B, T), 0, V)
    batch = {"input": tokens, "target": jnp.roll(tokens, -1, 1), "token_mask": jnp.ones((B, T), bool),
             "reset": jnp.zeros(B, bool)}
    variables = jax.jit(lambda rng: model.init(rng, tokens, batch["reset"], batch["token_mask"]))(jax.random.key(0))
    state = TrainState.create(apply_fn=model.apply, params=variables["params"], batch_stats={},
                              tx=optax.adam(1e-3), carry=model.initial_carry(B))
    return steps.make_train_step(language_model.task()), state, batch


def jax_step(B, T, H, L, V, E):
    import jax
    train_step, state, batch = jax_parts(B, T, H, L, V, E)
    train_step = jax.jit(train_step, donate_argnums=0)
    holder = {"state": state}

    def step():
        holder["state"], metrics = train_step(holder["state"], batch, jax.random.key(0))
        jax.block_until_ready(metrics)

    return step


def torch_step(B, T, H, L, V, E):
    import torch
    embed, lstm, out = torch.nn.Embedding(V, E), torch.nn.LSTM(E, H, L, batch_first=True), torch.nn.Linear(H, V)
    params = [*embed.parameters(), *lstm.parameters(), *out.parameters()]
    optimizer = torch.optim.Adam(params, 1e-3)
    tokens = torch.randint(0, V, (B, T))
    targets = torch.roll(tokens, -1, 1)
    holder = {"state": (torch.zeros(L, B, H), torch.zeros(L, B, H))}

    def step():
        optimizer.zero_grad()
        hidden, state = lstm(embed(tokens), holder["state"])
        loss = torch.nn.functional.cross_entropy(out(hidden).reshape(-1, V), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        holder["state"] = tuple(s.detach() for s in state)

    return step


def main(argv):
    del argv
    sizes = (_BATCH.value, _BPTT.value, _HIDDEN.value, _LAYERS.value, _VOCAB.value, _EMBED.value)
    chars = _BATCH.value * _BPTT.value
    print(f"batch {_BATCH.value}, bptt {_BPTT.value}, {_LAYERS.value} x LSTM {_HIDDEN.value}, vocab {_VOCAB.value}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    for name, make in (("jax (lax.scan)", jax_step), ("torch nn.LSTM", torch_step)):
        wall, cpu = _time(make(*sizes), _STEPS.value)
        print(f"{name:15s} {1000 * wall:7.1f} ms/step  {chars / wall:8.0f} chars/s  {1000 * cpu:7.1f} ms CPU/step")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
