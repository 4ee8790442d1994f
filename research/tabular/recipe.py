"""How the structured-data lesson trains, evaluates, interprets and predicts: entity embeddings for any table
(research/tabular/dataset.py), an ensemble of nets (research/tabular/ensemble.py) fitted with 1cycle, scored on
the validation (and test) rows beside the tree baselines on the same split and features, interpreted by
permutation importance and an embedding's PCA; predictions for new rows through the saved preprocessing.

experiments/sales_tabular.py is this recipe's config and entry points."""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.core import evaluation, experiment, inference, sharding, steps
from research.core.arrays import ArrayBatches
from research.core.train_state import TrainState
from research.tabular import baselines, dataset, ensemble, interpret, task as tabular_task
from research.tabular.model import TabularModel
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
    return TabularModel(cardinalities=tuple(prep.cardinalities),
                        num_outputs=1 if prep.task == "regression" else len(prep.classes),
                        hidden=tuple(m.hidden), dropouts=tuple(m.dropouts), embedding_dropout=m.embedding_dropout,
                        y_range=y_range)


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


def task_of(prep: Preprocessing) -> steps.Task:
    return tabular_task.task(prep.task, prep.log_target)


def setup_on(config, mesh, data: dataset.TableData) -> experiment.Setup:
    """The trainable pieces on already-loaded data (`config.seed` orders the batches)."""
    batches = ArrayBatches(data.train, config.batch_size, mesh, config.seed)
    return experiment.Setup(
        create_state=create_state_fn(config, data.prep),
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
        train_step=steps.make_train_step(task_of(data.prep)), batches=batches,
        eval_step=steps.make_eval_step(task_of(data.prep)))


def setup(config, mesh) -> experiment.Setup:
    return setup_on(config, mesh, dataset.load_table(config))


def main_metric(prep: Preprocessing) -> str:
    """The number the run is judged by (lower is better)."""
    return tabular_task.percentage_error_name(prep.log_target) if prep.task == "regression" else "log_loss"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None = None) -> dict:
    """Fits the ensemble's nets (range test, 1cycle), scores their average on validation (and test), fits the
    tree baselines on the same split and features, writes results.json, the preprocessing and the
    interpretation plots."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        data = dataset.load_table(config)
    data.prep.save(os.path.join(workdir, "preprocessing.json"))
    run = setup_on(config, mesh, data)
    task = task_of(data.prep)
    eval_step = steps.make_eval_step(task)
    evaluate_valid = evaluation.make_evaluator(eval_step, data.valid, config.eval_batch_size, mesh,
                                               finish=task.finish)
    with timer("lr_find"):
        learning_rate = experiment.learning_rate(config, workdir, run)
    states = []
    with timer("train"):
        for seed, member_dir in ensemble.members(config, workdir):
            member_config = ensemble.with_seed(config, seed)
            member_run = run if seed == config.seed else setup_on(member_config, mesh, data)
            states.append(experiment.fit(member_config, member_dir, member_run, learning_rate, mesh, evaluate_valid,
                                         stop_at=stop_at))
            if stop_at is not None and stop_at < config.num_epochs * run.batches.steps_per_epoch:
                return {}
    c = config.checkpoint
    states = [inference.restore_trained(member_dir, state, c.best_metric, c.best_mode)
              for state, (_, member_dir) in zip(states, ensemble.members(config, workdir))]
    outputs = lambda arrays: ensemble.outputs(states, data.prep, arrays, config, mesh)
    metrics = ensemble.scores(task, data.prep, outputs, data.valid, "valid_")
    if len(states) > 1:
        per_member = [evaluate_valid(state) for state in states]
        metrics.update({f"{k}_member_mean": float(np.mean([m[k] for m in per_member])) for k in per_member[0]})
    if data.test is not None:
        with timer("test"):
            metrics.update(ensemble.scores(task, data.prep, outputs, data.test, "test_"))
    trees = {}
    if config.baselines:
        with timer("baselines"):
            trees = baselines.fit_baselines(data.prep.task, data.prep.log_target, data.prep.cardinalities,
                                            data.train, data.valid, data.test, config.seed)
        for name, scores in trees.items():
            print(f"{name}: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items() if k.startswith("valid_")))
    importance = {}
    if config.interpret and jax.process_index() == 0:
        with timer("interpret"):
            metric = main_metric(data.prep)
            score = lambda arrays: ensemble.scores(task, data.prep, outputs, arrays, "")[metric]
            # the embedding plotted is the first member's
            importance = interpret.interpret_net(workdir, score, metric, data.valid, data.prep, states[0].params)
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, learning_rate=learning_rate,
                                    steps=config.num_epochs * run.batches.steps_per_epoch, baselines=trees,
                                    permutation_importance=importance, inputs={
                                        "categorical": data.prep.cat_names, "continuous": data.prep.cont_names})


def restore_members(config, workdir: str, prep: Preprocessing) -> list[TrainState]:
    """Each member's best (else latest) checkpoint, restored for inference."""
    model = make_model(config, prep)
    variables = _init_fn(model, prep)(jax.random.key(config.seed))  # shapes only: the checkpoint replaces them
    c = config.checkpoint
    return [inference.restore_for_inference(member_dir, model.apply, variables, c.best_metric, c.best_mode)
            for _, member_dir in ensemble.members(config, workdir)]


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
