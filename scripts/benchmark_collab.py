"""One training epoch of the MovieLens dot-product model, ours against PyTorch, in one run on this machine:

  .venv/bin/python scripts/benchmark_collab.py [--batch_size 64]

Ours: the experiment's epoch as one compiled program (a lax.scan over its steps, research/core/epoch_scan.py) and,
for comparison, the trainer's way (a Python loop over one jitted step). PyTorch: the same model (50 factors,
user/item biases, an offset, the scaled sigmoid into (0, 5.5), normal(0.01) initialisation), the same
batch size, AdamW (betas 0.9/0.99, decoupled weight decay 0.1) with a 1cycle schedule, as a plain eager loop
over shuffled index batches (fastai's collab learner does this and more per batch), at PyTorch's default
thread count and at one thread (the faster one counts: on a loaded machine one thread wins by far). fastai,
when it imports (`pip install fastai` beside the CPU torch): its own collab_learner (50 factors, y_range (0, 5.5))
on the same 80,000 training ratings, batch and rate, fit_one_cycle with wd 0.1; the training part of its second
epoch is timed (a callback, validation excluded). Each epoch is timed after a warm-up (compilation for JAX, 100
untimed steps for PyTorch, one epoch for fastai) and printed with the ratios.
"""

import os
import platform
import sys
import time

from absl import app, flags, logging

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size of both.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 5e-3, "Peak 1cycle rate of both.")
_TORCH_THREADS = flags.DEFINE_list("torch_threads", ["0", "1"],
                                   "PyTorch intra-op thread counts to time (0: PyTorch's default).")


def _report(what: str, started: float) -> float:
    seconds = time.perf_counter() - started
    print(f"{what}: {seconds:.3f} s", flush=True)
    return seconds


def time_jax(config, data) -> dict[str, float]:
    import jax
    from research.collab import recipe
    from research.core import sharding, trainer
    mesh = sharding.make_mesh(1)
    run = recipe.setup_on(config, mesh, data)
    epochs = recipe.epoch_setup(config, run)
    times = {}
    # Placed as the trainer places it: a fresh state's placement differs from the step's output's, and the
    # second call would compile again.
    place = lambda state: jax.device_put(state, sharding.state_shardings(state, mesh))
    state = place(epochs.create_state(epochs.make_tx(config.learning_rate, 3), jax.random.key(0)))
    epoch_step = trainer.jit_train_step(epochs.train_step, state, mesh)
    rng = jax.random.key(config.seed)
    started = time.perf_counter()
    state, metrics = epoch_step(state, epochs.batches.batch(0), rng)
    jax.block_until_ready((state, metrics))
    times["jax_scan_first_epoch_with_compile"] = _report("JAX: first epoch, compilation included", started)
    started = time.perf_counter()
    state, metrics = epoch_step(state, epochs.batches.batch(1), rng)
    jax.block_until_ready((state, metrics))
    times["jax_scan_epoch"] = _report("JAX: one epoch compiled as one lax.scan", started)

    state = place(run.create_state(run.make_tx(config.learning_rate, 3 * run.batches.steps_per_epoch),
                                   jax.random.key(0)))
    step_fn = trainer.jit_train_step(run.train_step, state, mesh)
    state, metrics = step_fn(state, run.batches.batch(0), jax.random.fold_in(rng, 0))  # compiles
    jax.block_until_ready(state)
    started = time.perf_counter()
    for step in range(1, run.batches.steps_per_epoch + 1):
        state, metrics = step_fn(state, run.batches.batch(step), jax.random.fold_in(rng, step))
    jax.block_until_ready((state, metrics))
    times["jax_step_loop_epoch"] = _report("JAX: one epoch as a loop over a jitted step", started)
    return times


def time_torch(data, num_users: int, num_items: int, batch_size: int, learning_rate: float,
               threads: int) -> float:
    import torch
    from torch import nn
    torch.set_num_threads(threads)

    class DotProductBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.user_factors, self.item_factors = nn.Embedding(num_users, 50), nn.Embedding(num_items, 50)
            self.user_bias, self.item_bias = nn.Embedding(num_users, 1), nn.Embedding(num_items, 1)
            for table in (self.user_factors, self.item_factors, self.user_bias, self.item_bias):
                nn.init.normal_(table.weight, std=0.01)
            self.offset = nn.Parameter(torch.zeros(()))

        def forward(self, user, item):
            score = (self.user_factors(user) * self.item_factors(item)).sum(1)
            score = score + self.user_bias(user)[:, 0] + self.item_bias(item)[:, 0] + self.offset
            return 5.5 * torch.sigmoid(score)

    torch.manual_seed(0)
    users = torch.as_tensor(data.train["user"], dtype=torch.long)
    items = torch.as_tensor(data.train["item"], dtype=torch.long)
    targets = torch.as_tensor(data.train["target"])
    steps_per_epoch = len(targets) // batch_size
    model = DotProductBias()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.99), weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=2 * steps_per_epoch,
                                                   pct_start=0.25)

    def epoch(num_steps: int = steps_per_epoch):
        order = torch.randperm(len(targets))
        for k in range(num_steps):
            rows = order[k * batch_size:(k + 1) * batch_size]
            loss = nn.functional.mse_loss(model(users[rows], items[rows]), targets[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        return float(loss.detach())

    epoch(100)  # warm-up
    started = time.perf_counter()
    epoch()
    return _report(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads: one epoch, eager loop", started)


def time_fastai(batch_size: int, learning_rate: float, threads: int) -> float | None:
    """The training part of fastai's second 1cycle epoch, or None when fastai does not import."""
    try:
        import fastai
        from fastai.callback.core import Callback
        from fastai.collab import CollabDataLoaders, collab_learner
    except ImportError as e:
        print(f"fastai not timed: {e} (pip install fastai beside the CPU torch)")
        return None
    import torch
    from research.collab import ratings as ratings_data
    torch.set_num_threads(threads)

    class TrainTime(Callback):
        def before_train(self):
            self.started = time.perf_counter()

        def after_train(self):
            self.seconds = time.perf_counter() - self.started

    frame = ratings_data.read_movielens_100k().frame[["user", "item", "rating"]]
    loaders = CollabDataLoaders.from_df(frame, valid_pct=0.2, seed=42, bs=batch_size)
    timer = TrainTime()
    learner = collab_learner(loaders, n_factors=50, y_range=(0, 5.5), cbs=timer)
    with learner.no_bar(), learner.no_logging():
        learner.fit_one_cycle(2, learning_rate, wd=0.1)
    print(f"fastai {fastai.__version__} (PyTorch {torch.__version__}, {torch.get_num_threads()} threads): one epoch "
          f"of fit_one_cycle, {len(loaders.train_ds)} training ratings: {timer.seconds:.3f} s", flush=True)
    return timer.seconds


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from experiments import movielens
    from research.collab import ratings
    config = movielens.get_config("dot")
    config.batch_size = _BATCH_SIZE.value
    config.learning_rate = _LEARNING_RATE.value
    data = ratings.load(config)
    steps = len(data.train["target"]) // config.batch_size
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; one epoch = {steps} steps of batch {config.batch_size}")
    ours = time_jax(config, data)
    import torch
    thread_counts = [int(threads) or torch.get_num_threads() for threads in _TORCH_THREADS.value]
    torch_epoch = min(time_torch(data, data.maps.num_users, data.maps.num_items, config.batch_size,
                                 config.learning_rate, threads) for threads in thread_counts)
    print(f"ratio (fastest PyTorch epoch / our compiled epoch): {torch_epoch / ours['jax_scan_epoch']:.1f}x; "
          f"against our step loop: {torch_epoch / ours['jax_step_loop_epoch']:.1f}x; "
          f"load average now {os.getloadavg()[0]:.1f}")
    fastai_epochs = [time_fastai(config.batch_size, config.learning_rate, threads) for threads in thread_counts]
    if None not in fastai_epochs:
        ratio = min(fastai_epochs) / ours["jax_scan_epoch"]
        print(f"ratio (fastest fastai epoch / our compiled epoch): {ratio:.1f}x; "
              f"load average now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
