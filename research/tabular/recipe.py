"""How the structured-data lesson trains, evaluates, interprets and predicts: entity embeddings for any table
(research/tabular/dataset.py), an ensemble of nets trained as one program (research/tabular/ensemble.py) with
1cycle over a budget of steps that follows the table's size, scored on the validation (and test) rows beside
the tree baselines on the same split and features, interpreted by permutation importance and an embedding's
PCA; predictions for new rows through the saved preprocessing.

experiments/sales_tabular.py is this recipe's config and entry points."""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.core import experiment, inference, seeds, sharding, steps
from research.core.arrays import ArrayBatches
from research.core.train_state import TrainState
from research.tabular import baselines, dataset, ensemble, interpret, task as tabular_task
from research.tabular.model import TabularModel
from research.tabular.numeric_embeddings import padded_edges
from research.tabular.preprocessing import Preprocessing
from research.tabular.table import frame_rows

def make_model(config, prep: Preprocessing) -> TabularModel:
    """`config.model` sized to the table: its embeddings, outputs and, for regression, y_range (the training
    targets' range widened by `y_range_margin` on each side)."""
    m = config.model
    y_range = None
    if prep.task == "regression" and m.y_range_margin >= 0:
        low, high = prep.target_range
        margin = m.y_range_margin * (high - low)
        y_range = (low - margin, high + margin)
    edges = prep.numeric_edges
    return TabularModel(cardinalities=tuple(prep.cardinalities),
                        num_outputs=1 if prep.task == "regression" else len(prep.classes),
                        hidden=tuple(m.hidden), dropouts=tuple(m.dropouts), embedding_dropout=m.embedding_dropout,
                        y_range=y_range, batch_norm=m.batch_norm, numeric_dim=m.numeric_dim,
                        numeric_edges=None if edges is None else tuple(map(tuple, padded_edges(edges).tolist())))


def _init_fn(model: TabularModel, prep: Preprocessing):
    """rng -> fresh variables of `model` (jitted), for one row of the table's inputs."""
    init = jax.jit(functools.partial(model.init, train=False))
    cat_1xC = jnp.zeros((1, len(prep.cat_names)), jnp.int32)
    cont_1xF = jnp.zeros((1, len(prep.cont_names)), jnp.float32)
    return lambda rng: init(rng, cat_1xC, cont_1xF)


def create_state_fn(config, prep: Preprocessing):
    """(tx, rng) -> a fresh TrainState of the table's net."""
    model = make_model(config, prep)
    init = _init_fn(model, prep)

    def create_state(tx, rng):
        variables = init(rng)
        return TrainState.create(apply_fn=model.apply, params=variables["params"],
                                 batch_stats=variables.get("batch_stats", {}), tx=tx)

    return create_state


def task_of(config, prep: Preprocessing) -> steps.Task:
    return tabular_task.task(prep.task, prep.log_target, config.label_smoothing)


def batch_size_for(config, num_rows: int, mesh) -> int:
    """`config.batch_size`, halved (down to 16, and a multiple of the mesh) until the training rows hold at least
    `config.min_batches_per_epoch` batches: a 200-row table still gets several steps an epoch."""
    size = config.batch_size
    while size // 2 >= max(16, mesh.size) and size * config.min_batches_per_epoch > num_rows:
        size //= 2
    return size


def num_steps_for(config, steps_per_epoch: int) -> int:
    """The training budget in steps: `num_epochs` epochs, but at least `min_steps` (small tables) and at most
    `max_steps` (large ones: the cost stops growing with the rows). 0 for a bound turns it off."""
    num_steps = config.num_epochs * steps_per_epoch
    return int(min(max(num_steps, config.min_steps), config.max_steps or num_steps))


def setup_on(config, mesh, data: dataset.TableData) -> experiment.Setup:
    """The trainable pieces of one member on already-loaded data (`config.seed` orders the batches)."""
    batches = ArrayBatches(data.train, batch_size_for(config, len(data.train["target"]), mesh), mesh, config.seed)
    return experiment.Setup(
        create_state=create_state_fn(config, data.prep),
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
        train_step=steps.make_train_step(task_of(config, data.prep)), batches=batches,
        eval_step=steps.make_eval_step(task_of(config, data.prep)))


def setup(config, mesh) -> experiment.Setup:
    return setup_on(config, mesh, dataset.load_table(config))


def main_metric(prep: Preprocessing) -> str:
    """The number the run is judged by (lower is better)."""
    return tabular_task.percentage_error_name(prep.log_target) if prep.task == "regression" else "log_loss"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None = None) -> dict:
    """Fits the ensemble (range test, 1cycle over the step budget; the checkpoint with the lowest validation
    loss kept), scores it on validation (and test), fits the tree baselines on the same split and features,
    writes results.json, the preprocessing and the interpretation plots."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        data = dataset.load_table(config)
    data.prep.save(os.path.join(workdir, "preprocessing.json"))
    run = setup_on(config, mesh, data)
    with timer("lr_find"):
        learning_rate = experiment.learning_rate(config, workdir, run)
    num_steps = num_steps_for(config, run.batches.steps_per_epoch)
    members = ensemble.members(config)
    print(f"training {members.size} member(s) for {num_steps} steps of {run.batches.batch_size} rows "
          f"({num_steps / run.batches.steps_per_epoch:.1f} epochs) at peak rate {learning_rate:g}")
    evaluate_valid = ensemble.make_evaluator(data.prep, data.valid, config.eval_batch_size, mesh)
    with timer("train"):
        states = seeds.fit(config, workdir, run, members, learning_rate, mesh, evaluate_valid, num_steps=num_steps,
                           stop_at=stop_at, checkpoint_every=max(num_steps // config.evaluations, 1))
    if stop_at is not None and stop_at < num_steps:
        return {}
    c = config.checkpoint
    states = inference.restore_trained(workdir, states, c.best_metric, c.best_mode)
    outputs = lambda arrays: ensemble.outputs(states, data.prep, arrays, config, mesh)
    metrics = {**evaluate_valid(states), **ensemble.scores(data.prep, outputs, data.valid, "valid_")}  # + AUC
    test = data.test if config.score_test else None
    if test is not None:
        with timer("test"):
            metrics.update(ensemble.scores(data.prep, outputs, test, "test_"))
    trees = {}
    if config.baselines:
        with timer("baselines"):
            trees = baselines.fit_baselines(data.prep.task, data.prep.log_target, data.prep.cardinalities,
                                            data.train, data.valid, test, config.seed)
        for name, scores in trees.items():
            print(f"{name}: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items() if k.startswith("valid_")))
    importance = {}
    if config.interpret and jax.process_index() == 0:
        with timer("interpret"):
            metric = main_metric(data.prep)
            score = lambda arrays: ensemble.scores(data.prep, outputs, arrays, "")[metric]
            # the embedding plotted is the first member's
            importance = interpret.interpret_net(workdir, score, metric, data.valid, data.prep,
                                                 seeds.member(states, 0).params)
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, learning_rate=learning_rate,
                                    steps=num_steps, batch_size=run.batches.batch_size, baselines=trees,
                                    permutation_importance=importance, inputs={
                                        "categorical": data.prep.cat_names, "continuous": data.prep.cont_names})


def restore_members(config, workdir: str, prep: Preprocessing) -> TrainState:
    """The ensemble's stacked members at the run's best (else latest) checkpoint, restored for inference."""
    model = make_model(config, prep)
    init = _init_fn(model, prep)
    keys = jax.vmap(jax.random.key)(jnp.asarray(ensemble.members(config).seeds))
    variables = jax.vmap(init)(keys)  # shapes only: the checkpoint replaces them
    c = config.checkpoint
    return inference.restore_for_inference(workdir, model.apply, variables, c.best_metric, c.best_mode)


def predict(config: ml_collections.ConfigDict, workdir: str, input_path: str) -> list[dict]:
    """Predictions for the rows of the CSV `input_path` with the run's saved preprocessing and checkpoints: each
    row's input columns plus `prediction` (original units) or `prediction` (class) and `probability`."""
    prep = Preprocessing.load(os.path.join(workdir, "preprocessing.json"))
    frame = dataset.new_rows(config.data, prep, input_path)
    arrays = prep.arrays(frame, with_target=False)
    mesh = sharding.make_mesh(1)
    outputs = ensemble.outputs(restore_members(config, workdir, prep), prep, arrays, config, mesh)
    written = frame.copy()
    if prep.task == "regression":
        written["prediction"] = prep.to_original_units(outputs)
    else:
        written["prediction"] = [prep.classes[k] for k in outputs.argmax(-1)]
        written["probability"] = outputs.max(-1)
    return frame_rows(written)
