"""Many seeds, and a grid over one hyperparameter, trained as ONE compiled program: K members stacked on a
leading axis, the experiment's own train step vmapped over them.

Member k is exactly the single run `scripts/train.py --config.seed=seeds[k]` at its hyperparameter values:
its own initialisation (`create_state(tx, key(seed))`), its own data order and augmentation (the batches
`ArrayBatches(..., seed)` draws, all members gathering from the one copy of the dataset on the device) and its
own dropout keys (`fold_in(key(seed), step)`, as the trainer draws them). tests/test_seeds.py checks this to
1e-5 per step against separate runs.

Hyperparameters are injected per member, never compiled in, so one program serves any values:
- "learning_rate" is the peak rate handed to the experiment's `make_tx(peak_lr, total_steps)`. The member's
  step builds its optimizer with its rate as a traced value, so the rate scales whatever schedule the
  experiment uses (1cycle, SGDR, constant) exactly as a single run at that rate would; the optimizer state has
  the same structure at every rate, so the members stack.
- any other hyperparameter the optimizer injects unscheduled (`weight_decay`; `momentum` when not scheduled)
  is written into each member's `opt_state.hyperparams` at the start; `optax.inject_hyperparams` reads it
  back at every step.

The trainer (research/trainer.py, `members=`) runs the stacked state like any other: jitted once, members
split over the devices of the mesh, checkpoints and resume, metrics logged per member and as their mean.
"""

import itertools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from research.core import arrays, sharding, trainer
from research.core.errors import InputError

LEARNING_RATE = "learning_rate"


class Members(NamedTuple):
    """K members: a seed each and, for a sweep, each one's value of the swept hyperparameters."""
    seeds: tuple[int, ...]
    hyperparams: dict[str, tuple[float, ...]] = {}

    @property
    def size(self) -> int:
        return len(self.seeds)

    def names(self) -> list[str]:
        """"seed3", or "seed3_learning_rate=0.01" in a sweep: how a member's metrics are logged."""
        return ["_".join([f"seed{seed}"] + [f"{name}={values[k]:g}" for name, values in self.hyperparams.items()])
                for k, seed in enumerate(self.seeds)]


def seed_range(first_seed: int, num_seeds: int) -> Members:
    """Seeds first_seed, first_seed + 1, ...: the runs `--config.seed=first_seed + k`."""
    if num_seeds < 1:
        raise InputError(f"num_seeds={num_seeds}: need at least one seed")
    return Members(tuple(range(first_seed, first_seed + num_seeds)))


def sweep(seeds: Sequence[int], name: str, values: Sequence[float]) -> Members:
    """Every value of hyperparameter `name` with every seed (value-major): len(values) * len(seeds) members."""
    pairs = list(itertools.product(values, seeds))
    return Members(tuple(int(seed) for _, seed in pairs), {name: tuple(float(value) for value, _ in pairs)})


def member(states, k: int):
    """Member k of stacked states (or metrics)."""
    return jax.tree.map(lambda x: x[k], states)


def create_states(create_state: Callable, tx, members: Members):
    """K fresh states stacked on a leading axis, member k initialised from key(seeds[k]) (in one vmapped,
    compiled initialisation), with each member's injected hyperparameters other than the peak learning rate."""
    keys = jax.vmap(jax.random.key)(jnp.asarray(members.seeds, jnp.int32))
    states = jax.vmap(lambda key: create_state(tx, key))(keys)
    injected = {name: values for name, values in members.hyperparams.items() if name != LEARNING_RATE}
    if not injected:
        return states
    hyperparams = dict(states.opt_state.hyperparams)
    for name, values in injected.items():
        if name not in hyperparams:
            raise InputError(f"the optimizer injects no hyperparameter {name!r}; it injects {sorted(hyperparams)}")
        hyperparams[name] = jnp.asarray(values, hyperparams[name].dtype)
    return states.replace(opt_state=states.opt_state._replace(hyperparams=hyperparams))


class MemberBatches:
    """The trainer's batch source for K members: `batch(step)` is
    {"batch": every member's own batch, stacked, "seed": K seeds, "step": K copies of step,
     "hyperparams": {name: K values}} - all a member's step needs besides its state, on the member axis."""

    def __init__(self, batches: arrays.ArrayBatches, members: Members):
        self.steps_per_epoch = batches.steps_per_epoch
        seeds_K = jnp.asarray(members.seeds, jnp.int32)
        hyperparams = {name: jnp.asarray(values, jnp.float32) for name, values in members.hyperparams.items()}

        def batch(step):
            # member k's batch is the one `ArrayBatches(..., seed=seeds[k])` gives, from the one copy of the arrays
            return {"batch": jax.vmap(lambda seed: batches.batch_traceable(step, seed=seed))(seeds_K), "seed": seeds_K,
                    "step": jnp.full(seeds_K.shape, step, jnp.int32), "hyperparams": hyperparams}

        self._batch = jax.jit(batch, out_shardings=sharding.batch_sharded(batches.mesh))  # members split

    def batch(self, step: int) -> dict:
        return self._batch(step)


def member_step(train_step: Callable, make_tx: Callable[[float, int], object] | None = None,
                total_steps: int = 0) -> Callable:
    """One member's step for the trainer (which vmaps it): `(state, member_batch, rng) -> (state, metrics)`.

    The trainer's shared `rng` is not used: the member draws `fold_in(key(seed), step)` as its single run does.
    With a "learning_rate" axis, the step runs with `make_tx(member's rate, total_steps)`."""

    def step(state, member_batch: dict, rng):
        del rng
        rates = member_batch["hyperparams"]
        own = state.replace(tx=make_tx(rates[LEARNING_RATE], total_steps)) if LEARNING_RATE in rates else state
        key = jax.random.fold_in(jax.random.key(member_batch["seed"]), member_batch["step"])
        new_state, metrics = train_step(own, member_batch["batch"], key)
        return new_state.replace(tx=state.tx), metrics  # the stacked state keeps one (static) optimizer

    return step


def vmapped_step(train_step: Callable, make_tx: Callable | None = None, total_steps: int = 0) -> Callable:
    """`step(states, member_batch) -> (states, metrics_K)`: all members' steps, vmapped (not jitted)."""
    one = member_step(train_step, make_tx, total_steps)
    return jax.vmap(lambda state, batch: one(state, batch, None))


def fit(config, workdir: str, setup, members: Members, peak_lr: float, mesh, evaluate=None,
        num_steps: int | None = None, stop_at: int | None = None, checkpoint_every: int | None = None):
    """`experiment.fit` for K members in one program: stacked fresh states trained with the experiment's
    optimizer at `peak_lr` (or each member's "learning_rate"), checkpointed (every `checkpoint_every` steps,
    default `config.checkpoint.every_epochs` epochs, a fraction too) and resumable in workdir.
    `evaluate(states) -> {name: value}` (see `evaluator`)."""
    steps_per_epoch = setup.batches.steps_per_epoch
    num_steps = num_steps or config.num_epochs * steps_per_epoch
    rates = members.hyperparams.get(LEARNING_RATE)
    tx = setup.make_tx(rates[0] if rates else peak_lr, num_steps)
    states = create_states(setup.create_state, tx, members)
    step = member_step(setup.train_step, setup.make_tx if rates else None, num_steps)
    c = config.checkpoint
    return trainer.train(state=states, train_step=step, batches=MemberBatches(setup.batches, members),
                         num_steps=num_steps, mesh=mesh, seed=config.seed, workdir=workdir, evaluate=evaluate,
                         stop_at=stop_at,
                         checkpoint_every=checkpoint_every or max(1, round(c.every_epochs * steps_per_epoch)),
                         log_every=config.log_every, keep_checkpoints=c.keep, best_metric=c.best_metric or None,
                         best_mode=c.best_mode, skip_nonfinite=config.skip_nonfinite, members=members.names(),
                         meta={"learning_rate": peak_lr, "seeds": list(members.seeds),
                               "hyperparams": {k: list(v) for k, v in members.hyperparams.items()}})


def evaluator(evaluate_one: Callable[[object], dict[str, float]], members: Members, mesh) -> Callable:
    """`evaluate(states) -> {name: mean over members, name/member: value}` from a single state's evaluation
    (e.g. `evaluation.make_evaluator(...)`): each member is evaluated on its own, with one compiled program."""
    names = members.names()

    def evaluate(states) -> dict[str, float]:
        per_member = [evaluate_one(placed(member(states, k), mesh)) for k in range(members.size)]
        return member_scalars(per_member, names)

    return evaluate


def placed(state, mesh):
    """A single state on `mesh` with the single-run shardings (a member sliced off a member-sharded stack)."""
    return jax.device_put(state, sharding.state_shardings(state, mesh))


def member_scalars(per_member: Sequence[dict[str, float]], names: Sequence[str]) -> dict[str, float]:
    """{name: mean over members, name/member: member's value}: how member metrics are logged."""
    scalars = {key: sum(m[key] for m in per_member) / len(per_member) for key in per_member[0]}
    for member_name, metrics in zip(names, per_member):
        scalars.update({f"{key}/{member_name}": value for key, value in metrics.items()})
    return scalars
