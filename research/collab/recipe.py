"""How collaborative filtering trains and evaluates (lesson 5, experiments/movielens.py): the model the config
names (`dot`, `net`) fitted with 1cycle, an epoch as one compiled program on a one-device mesh
(research/core/epoch_scan.py), scored on the validation ratings beside the bias baseline; or, for `bayes`,
Bayesian matrix factorisation's posterior mean ratings (research/collab/bpmf.py). Interpretation plots after.

A run's workdir keeps what predictions need (research/collab/recommend.py): the index maps, the training pairs
(to leave out what a user rated) and, for bayes, the posterior ratings.
"""

import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from research.collab import bias_baseline, bpmf, plots, ratings
from research.collab.model import DotProductBias, EmbeddingNet
from research.core import epoch_scan, evaluation, experiment, regression, sharding, steps
from research.core.arrays import ArrayBatches
from research.core.errors import InputError
from research.core.train_state import TrainState

INDEX_MAPS_FILE = "index_maps.json"
TRAIN_PAIRS_FILE = "train_ratings.npz"  # the training (user, item) index pairs
SCORES_FILE = "posterior_ratings.npy"  # bayes: the users x items posterior mean ratings
TASK = regression.task(("user", "item"))


def y_range_of(config, maps: ratings.IndexMaps) -> tuple[float, float]:
    """`config.model.y_range`, or from the training ratings' range: 1-5 stars give fastai's (0, 5.5)."""
    if config.model.y_range:
        low, high = (float(v) for v in config.model.y_range)
        return low, high
    spread = maps.max_rating - maps.min_rating
    return maps.min_rating - spread / 4, maps.max_rating + spread / 8


def make_model(config, maps: ratings.IndexMaps):
    m = config.model
    y_range = y_range_of(config, maps)
    if m.kind == "dot":
        return DotProductBias(maps.num_users, maps.num_items, m.num_factors, y_range)
    if m.kind == "net":
        return EmbeddingNet(maps.num_users, maps.num_items, tuple(m.hidden), tuple(m.dropouts), m.embedding_dropout,
                            m.user_factors, m.item_factors, y_range)
    raise InputError(f"model.kind={m.kind!r}: use 'dot' or 'net' (or the bayes preset's 'bayes')")


def init_fn(model):
    """`init(rng) -> a fresh model's variables` (jitted once; initialised on one (user, item) pair)."""
    init = jax.jit(functools.partial(model.init, train=False))
    index_1 = jnp.ones((1,), jnp.int32)
    return lambda rng: init(rng, index_1, index_1)


def create_state_fn(config, maps: ratings.IndexMaps):
    model = make_model(config, maps)
    init = init_fn(model)

    def create_state(tx, rng):
        variables = init(rng)
        return TrainState.create(apply_fn=model.apply, params=variables["params"],
                                 batch_stats=variables.get("batch_stats", {}), tx=tx)

    return create_state


def setup(config, mesh) -> experiment.Setup:
    return setup_on(config, mesh, ratings.load(config))


def setup_on(config, mesh, data: ratings.RatingsData) -> experiment.Setup:
    """The step-by-step pieces on already-loaded ratings (what lr_find and the benchmarks use): one jitted step
    per batch."""
    return experiment.Setup(
        create_state=create_state_fn(config, data.maps),
        make_tx=lambda peak_lr, total_steps: experiment.one_cycle_optimizer(config, peak_lr, total_steps),
        train_step=steps.make_train_step(TASK), batches=ArrayBatches(data.train, config.batch_size, mesh, config.seed),
        eval_step=steps.make_eval_step(TASK))


def epoch_setup(config, run: experiment.Setup) -> experiment.Setup:
    """`run` with an epoch as the trainer's step (research/core/epoch_scan.py): the schedule still counts
    batches."""
    inner = run.batches.steps_per_epoch
    return run._replace(make_tx=lambda peak_lr, total_epochs: run.make_tx(peak_lr, total_epochs * inner),
                        train_step=epoch_scan.make_epoch_step(run.train_step, run.batches, config.seed),
                        batches=epoch_scan.EpochBatches(run.batches))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, stop_at: int | None = None) -> dict:
    """Loads the ratings, keeps what predictions need in workdir, trains (or samples, for bayes), scores the
    validation ratings and the bias baseline, plots, and writes results.json."""
    timer = experiment.Timer()
    mesh = sharding.make_mesh(config.num_devices or None, config.fsdp_devices)
    with timer("data"):
        data = ratings.load(config)
    data.maps.save(os.path.join(workdir, INDEX_MAPS_FILE))
    np.savez(os.path.join(workdir, TRAIN_PAIRS_FILE), user=data.train["user"], item=data.train["item"])
    if config.model.kind == "bayes":
        return sample_and_evaluate(config, workdir, data, timer, mesh)
    run = setup_on(config, mesh, data)
    evaluate_valid = evaluation.make_evaluator(steps.make_eval_step(TASK), data.valid, config.eval_batch_size, mesh,
                                               finish=TASK.finish)
    with timer("lr_find"):
        learning_rate = experiment.learning_rate(config, workdir, run)
    fitted = run
    if config.epoch_scan and mesh.size == 1:
        fitted = epoch_setup(config, run)
    elif config.epoch_scan:
        print(f"epoch_scan needs a one-device mesh; running the trainer's step loop on {mesh.size} devices")
    with timer("train"):
        state = experiment.fit(config, workdir, fitted, learning_rate, mesh, evaluate_valid,
                               num_steps=config.num_epochs * fitted.batches.steps_per_epoch, stop_at=stop_at)
    if stop_at is not None and stop_at < config.num_epochs * fitted.batches.steps_per_epoch:
        return {}
    metrics = evaluate_valid(state)
    baseline = report_baseline(config, data, metrics, timer)
    if config.interpret and jax.process_index() == 0:
        with timer("interpret"):
            interpret(workdir, state.params, data)
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, learning_rate=learning_rate,
                                    steps=config.num_epochs * run.batches.steps_per_epoch,
                                    baselines={"bias_als": baseline}, data=data.info())


def sample_and_evaluate(config, workdir: str, data: ratings.RatingsData, timer: experiment.Timer, mesh) -> dict:
    """The bayes preset: the Gibbs chain's posterior mean ratings (saved for predictions), scored on validation."""
    b, maps = config.bayes, data.maps
    with timer("sample"):
        ratings_UxI = bpmf.posterior_mean_ratings(
            data.train["user"], data.train["item"], data.train["target"], maps.num_users, maps.num_items,
            config.model.num_factors, b.num_sweeps, b.burn_in, b.alpha, b.beta0, maps.min_rating, maps.max_rating,
            config.seed)
    if jax.process_index() == 0:
        np.save(os.path.join(workdir, SCORES_FILE), ratings_UxI)
    errors_N = ratings_UxI[data.valid["user"], data.valid["item"]] - data.valid["target"]
    metrics = {"valid_rmse": float(np.sqrt(np.mean(errors_N ** 2))), "valid_mae": float(np.mean(np.abs(errors_N)))}
    baseline = report_baseline(config, data, metrics, timer)
    return experiment.write_results(workdir, metrics, config, timer.total(), mesh, sweeps=b.num_sweeps,
                                    baselines={"bias_als": baseline}, data=data.info())


def report_baseline(config, data: ratings.RatingsData, metrics: dict, timer: experiment.Timer) -> dict:
    """The bias baseline (ALS) on the same split, clipped to the training ratings' range, printed beside the
    model's validation RMSE."""
    maps = data.maps
    with timer("baseline"):
        baseline = bias_baseline.chosen_on_holdout(data.train, data.valid, maps.num_users, maps.num_items,
                                                   config.seed, maps.min_rating, maps.max_rating)
    print(f"{config.model.kind}: valid_rmse={metrics['valid_rmse']:.4f}; bias baseline (ALS, lambda_user="
          f"{baseline['lambda_user']:g}, lambda_item={baseline['lambda_item']:g}): "
          f"valid_rmse={baseline['valid_rmse']:.4f}")
    return baseline


def interpret(workdir: str, params, data: ratings.RatingsData) -> None:
    """item_biases.png (dot: the most and least liked of the 1000 most-rated items by learned bias) and
    item_factors_pca.png (their factors on two principal components, the 50 most rated labelled)."""
    maps = data.maps
    counts_I = np.bincount(data.train["item"], minlength=maps.num_items)
    most_rated = np.argsort(-counts_I, kind="stable")[:1000]
    most_rated = most_rated[counts_I[most_rated] > 0]
    titles = [maps.title(maps.items[k - 1]) for k in most_rated]
    if "item_bias" in params:
        biases = np.asarray(params["item_bias"])[most_rated, 0]
        plots.plot_item_biases(os.path.join(workdir, "item_biases.png"), biases, titles)
    factors = np.asarray(params["item_factors"])[most_rated]
    plots.plot_item_factors(os.path.join(workdir, "item_factors_pca.png"), factors, titles, num_labels=50)
