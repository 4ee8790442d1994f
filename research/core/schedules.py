"""Learning-rate and momentum schedules, as Optax schedules (functions of the step count).

- `one_cycle`: Leslie Smith's 1cycle as fastai implements it: cosine warm-up from max_lr/div_factor to
  max_lr over `pct_start` of training, then cosine annealing to max_lr/(div_factor*final_div_factor);
  `one_cycle_momentum` cycles momentum the opposite way (high, low at the peak lr, high again).
- `sgdr`: cosine annealing with warm restarts (Loshchilov & Hutter); cycle i lasts cycle_len * cycle_mult**i.
- `cosine`, `constant`.
"""

import optax


def one_cycle(total_steps: int, max_lr: float, pct_start: float = 0.25, div_factor: float = 25.0,
              final_div_factor: float = 1e5) -> optax.Schedule:
    return optax.cosine_onecycle_schedule(total_steps, max_lr, pct_start, div_factor, final_div_factor)


def _cosine_from_to(start: float, end: float, steps: int) -> optax.Schedule:
    """Half-cosine from `start` (step 0) to `end` (step `steps`)."""
    return optax.cosine_decay_schedule(init_value=start, decay_steps=max(steps, 1), alpha=end / start)


def one_cycle_momentum(total_steps: int, pct_start: float = 0.25, max_momentum: float = 0.95,
                       min_momentum: float = 0.85) -> optax.Schedule:
    warmup = int(pct_start * total_steps)
    return optax.join_schedules(
        [_cosine_from_to(max_momentum, min_momentum, warmup),
         _cosine_from_to(min_momentum, max_momentum, total_steps - warmup)], [warmup])


def sgdr(base_lr: float, cycle_len: int, cycle_mult: int = 1, num_cycles: int = 1,
         min_lr: float = 0.0) -> optax.Schedule:
    """Cosine annealing from base_lr to min_lr, restarted; cycle i has cycle_len * cycle_mult**i steps."""
    lengths = [cycle_len * cycle_mult ** i for i in range(num_cycles)]
    boundaries = [sum(lengths[:i + 1]) for i in range(num_cycles - 1)]
    cycles = [optax.cosine_decay_schedule(base_lr, n, alpha=min_lr / base_lr) for n in lengths]
    return optax.join_schedules(cycles, boundaries)


def sgdr_total_steps(cycle_len: int, cycle_mult: int, num_cycles: int) -> int:
    return sum(cycle_len * cycle_mult ** i for i in range(num_cycles))


def cosine(total_steps: int, base_lr: float, warmup_steps: int = 0) -> optax.Schedule:
    if warmup_steps == 0:
        return optax.cosine_decay_schedule(base_lr, total_steps)
    return optax.warmup_cosine_decay_schedule(0.0, base_lr, warmup_steps, total_steps)


def constant(base_lr: float) -> optax.Schedule:
    return optax.constant_schedule(base_lr)
