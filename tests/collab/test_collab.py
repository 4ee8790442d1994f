"""Collaborative filtering (lesson 5): the bias baseline, unseen users and items, y_range, the ratings CSV's
errors, one compiled epoch against the step loop, a time split and predict, resume. The presets' runs on
MovieLens-100k (and their floors) are in tests/test_experiments.py."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from experiments import movielens
from research.collab import bias_baseline, bpmf, ratings as ratings_data, recipe, splits
from research.collab.model import DotProductBias, EmbeddingNet, lookup, scaled_sigmoid
from research.core import sharding, trainer
from research.core.checkpoint import Checkpointer
from research.core.errors import InputError


@pytest.fixture(scope="module")
def movielens_ratings():
    return ratings_data.read_movielens_100k()


def test_bias_baseline_solves_a_tiny_case_by_hand():
    # users A=1, B=2; items X=1, Y=2; ratings A-X 5, A-Y 4, B-X 3: mean 4. With lambda 1 the normal equations
    # 3bA + bX + bY = 1, 2bB + bX = -1, bA + bB + 3bX = 0, 2bY + bA = 0 give bA 8/21, bB -11/21, bX 1/21, bY -4/21.
    biases = bias_baseline.fit(np.array([1, 1, 2]), np.array([1, 2, 1]), np.array([5.0, 4.0, 3.0]), 3, 3,
                               lambda_user=1.0, lambda_item=1.0, num_sweeps=200)
    assert biases.mean == 4.0
    np.testing.assert_allclose(biases.user_U, [0, 8 / 21, -11 / 21], atol=1e-9)
    np.testing.assert_allclose(biases.item_I, [0, 1 / 21, -4 / 21], atol=1e-9)
    # B never rated Y; the unseen user 0 and item 0 get the global mean path.
    np.testing.assert_allclose(biases.predict(np.array([2, 0, 0]), np.array([2, 1, 0])),
                               [4 - 15 / 21, 4 + 1 / 21, 4.0], atol=1e-9)


def test_unseen_users_and_items_take_the_global_mean_path():
    maps = ratings_data.IndexMaps.fit(pd.DataFrame({"user": ["7", "9"], "item": ["a", "b"], "rating": [4.0, 2.0]}),
                                      {"a": "Film A", "z": "never rated"})
    np.testing.assert_array_equal(maps.user_index(["9", "7", "new"]), [2, 1, 0])
    np.testing.assert_array_equal(maps.item_index(["b", "zzz"]), [2, 0])
    assert maps.titles == {"a": "Film A"} and maps.mean_rating == 3.0
    # Unseen (index 0) looks up the mean of the trained rows: the average user / item. Row 0 itself is unused.
    np.testing.assert_allclose(lookup(jnp.array([[9.0, 9.0], [1.0, 2.0], [3.0, 6.0]]), jnp.array([2, 0, 1])),
                               [[3.0, 6.0], [2.0, 4.0], [1.0, 2.0]])
    model = DotProductBias(num_users=3, num_items=3, num_factors=1, y_range=(0.0, 5.5))
    column = lambda *values: jnp.array(values)[:, None]
    params = {"user_factors": column(9.0, 0.1, 0.3), "item_factors": column(9.0, 0.2, 0.4),
              "user_bias": column(9.0, 0.1, 0.3), "item_bias": column(9.0, -0.2, 0.2), "offset": jnp.asarray(0.5)}
    predicted = jax.jit(model.apply)({"params": params}, jnp.array([0, 0, 1, 2]), jnp.array([0, 2, 0, 1]))
    # by hand: offset + <user, item> + user bias + item bias, the unseen ones at the means (0.2, 0.3, 0.2, 0.0)
    scores = [0.5 + 0.2 * 0.3 + 0.2 + 0.0, 0.5 + 0.2 * 0.4 + 0.2 + 0.2, 0.5 + 0.1 * 0.3 + 0.1 + 0.0,
              0.5 + 0.3 * 0.2 + 0.3 - 0.2]
    np.testing.assert_allclose(predicted, 5.5 / (1 + np.exp(-np.array(scores))), rtol=1e-6)
    net = EmbeddingNet(num_users=4, num_items=3, hidden=(8,), dropouts=(0.5,))
    variables = jax.jit(net.init)(jax.random.key(0), jnp.ones(1, jnp.int32), jnp.ones(1, jnp.int32))
    variables["batch_stats"] = jax.tree.map(lambda s: s + 0.5, variables["batch_stats"])  # as if trained
    table = variables["params"]["user_factors"]
    variables["params"]["user_factors"] = table.at[3].set((table[1] + table[2]) / 2)  # row 3 = the mean row
    apply = jax.jit(net.apply)
    np.testing.assert_allclose(apply(variables, jnp.array([0, 0]), jnp.array([1, 0])),
                               apply(variables, jnp.array([3, 3]), jnp.array([1, 0])), rtol=1e-6)
    assert np.isfinite(apply(variables, jnp.array([0]), jnp.array([0]))).all()


def test_y_range_is_a_scaled_sigmoid():
    np.testing.assert_allclose(scaled_sigmoid(jnp.array([0.0, -1e4, 1e4, np.log(3.0)]), (0.0, 5.5)),
                               [2.75, 0.0, 5.5, 5.5 * 0.75], rtol=1e-6)
    model = DotProductBias(num_users=5, num_items=5, num_factors=3, y_range=(1.0, 2.0), init_std=100.0)
    variables = jax.jit(model.init)(jax.random.key(1), jnp.ones(1, jnp.int32), jnp.ones(1, jnp.int32))
    predicted = jax.jit(model.apply)(variables, jnp.arange(5), jnp.arange(5)[::-1])
    assert float(predicted.min()) >= 1.0 and float(predicted.max()) <= 2.0
    assert float(predicted.max() - predicted.min()) > 0.5  # large scores reach both ends


def test_ratings_csv_errors_are_one_line(tmp_path):
    path = str(tmp_path / "r.csv")
    pd.DataFrame({"uid": ["1", "2"], "movie": ["a", "b"], "stars": ["4", "five"]}).to_csv(path, index=False)
    with pytest.raises(InputError, match=r"r.csv has no column 'rating' \(columns: uid, movie, stars\)") as e:
        ratings_data.read_ratings_csv(path, user="uid", item="movie")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"column 'stars' has a non-numeric rating 'five' in data row 2") as e:
        ratings_data.read_ratings_csv(path, user="uid", item="movie", rating="stars")
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match="no column 'when'"):
        ratings_data.read_ratings_csv(path, "uid", "movie", "stars", timestamp="when")


def test_movielens_splits(movielens_ratings):
    frame = movielens_ratings.frame
    assert len(frame) == 100_000 and frame["user"].nunique() == 943 and frame["item"].nunique() == 1682
    assert movielens_ratings.titles["1"] == "Toy Story (1995)"
    u1 = splits.grouplens_fold(len(frame), 1)
    test = frame[u1 == 1].assign(u=lambda f: f["user"].astype(int), i=lambda f: f["item"].astype(int))
    first = test.sort_values(["u", "i"]).head(3)[["u", "i", "rating"]].to_numpy()
    np.testing.assert_array_equal(first, [[1, 6, 5], [1, 10, 3], [1, 12, 5]])  # GroupLens's u1.test
    folds = sum(splits.grouplens_fold(len(frame), k) for k in range(1, 6))
    np.testing.assert_array_equal(folds, 1)  # disjoint test folds covering every rating
    split = splits.random_split(len(frame), 0.2, 42)
    assert split.sum() == 20_000
    np.testing.assert_array_equal(split, splits.random_split(len(frame), 0.2, 42))
    late = splits.time_split(frame["timestamp"].to_numpy(), 0.2)
    assert frame["timestamp"][late == 1].min() >= frame["timestamp"][late == 0].max()


def test_one_compiled_epoch_equals_the_step_loop(movielens_ratings, tmp_path):
    maps = ratings_data.IndexMaps.fit(movielens_ratings.frame.iloc[:2000], {})
    train = maps.arrays(movielens_ratings.frame.iloc[:2000])
    config, mesh = movielens.get_config("dot"), sharding.make_mesh(1)
    run = recipe.setup_on(config, mesh, ratings_data.RatingsData(maps, train, train, "u.data[:2000]"))
    steps_per_epoch = run.batches.steps_per_epoch  # 31
    total = 2 * steps_per_epoch
    tx = run.make_tx(5e-3, total)
    common = dict(mesh=mesh, seed=config.seed, progress=False, log_every=10 ** 6)
    looped = trainer.train(state=run.create_state(tx, jax.random.key(0)), train_step=run.train_step,
                           batches=run.batches, num_steps=total, workdir=str(tmp_path / "loop"), **common)
    epochs = recipe.epoch_setup(config, run)
    scanned = trainer.train(state=epochs.create_state(epochs.make_tx(5e-3, 2), jax.random.key(0)),
                            train_step=epochs.train_step, batches=epochs.batches, num_steps=2,
                            workdir=str(tmp_path / "scan"), **common)
    assert int(scanned.step) == int(looped.step) == total
    for a, b in zip(jax.tree.leaves(looped.params), jax.tree.leaves(scanned.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.asarray(looped.params["item_bias"]), 0.0, atol=1e-3)


def test_csv_training_and_top_n_recommendations(movielens_ratings, tmp_path):
    frame = movielens_ratings.frame.iloc[:20000]
    csv = str(tmp_path / "mine.csv")
    frame.rename(columns={"user": "who", "item": "film", "rating": "stars"}).to_csv(csv, index=False)
    titles = str(tmp_path / "titles.csv")
    pd.DataFrame({"film": list(movielens_ratings.titles),
                  "title": list(movielens_ratings.titles.values())}).to_csv(titles, index=False)
    config = movielens.get_config("dot")
    config.data.update(path=csv, user="who", item="film", rating="stars", timestamp="timestamp",
                       titles=titles, split="time")
    config.num_epochs = 3
    workdir = str(tmp_path / "run")
    results = movielens.train_and_evaluate(config, workdir)
    data = ratings_data.load(config)  # the same time split: predicting the training mean is the floor to beat
    mean_rmse = float(np.sqrt(np.mean((data.valid["target"] - data.train["target"].mean()) ** 2)))
    assert results["metrics"]["valid_rmse"] < mean_rmse - 0.03, (results["metrics"]["valid_rmse"], mean_rmse)
    assert os.path.exists(os.path.join(workdir, "item_biases.png"))
    assert os.path.exists(os.path.join(workdir, "item_factors_pca.png"))
    users = str(tmp_path / "users.csv")
    pd.DataFrame({"who": ["196", "nobody"]}).to_csv(users, index=False)
    top = pd.DataFrame(movielens.predict(config, workdir, users))
    assert len(top) == 2 * config.top_n
    rated = set(frame[frame["user"] == "196"]["item"])
    first = top[top["user"] == "196"]
    assert not set(first["item"]) & rated and first["predicted_rating"].is_monotonic_decreasing
    assert (first["title"] != "").all()  # every recommended film has its title
    nobody = top[top["user"] == "nobody"]  # unseen: the average user's ranking
    assert len(nobody) == config.top_n and nobody["predicted_rating"].is_monotonic_decreasing


def test_wishart_draws_have_the_wishart_mean():
    scale = jnp.asarray([[2.0, 0.5], [0.5, 1.0]])
    draws = jax.vmap(lambda key: bpmf.wishart(key, scale, 7.0))(jax.random.split(jax.random.key(0), 4000))
    np.testing.assert_allclose(np.asarray(draws.mean(0)), 7.0 * np.asarray(scale), rtol=0.05, atol=0.1)


def test_bpmf_recovers_a_planted_low_rank_matrix():
    """Ratings = 3 + a rank-2 product + noise on 30% of a 60 x 80 matrix: the posterior mean predicts the
    held-out cells far better than the mean, and index 0 (no ratings) gets the population's ratings."""
    rng = np.random.default_rng(0)
    users_UxD, items_IxD = rng.normal(0, 0.7, (60, 2)), rng.normal(0, 0.7, (80, 2))
    truth = 3.0 + users_UxD @ items_IxD.T
    truth[0], truth[:, 0] = 3.0, 3.0
    observed = rng.random(truth.shape) < 0.3
    observed[0], observed[:, 0] = False, False
    users, items = np.nonzero(observed)
    ratings = truth[users, items] + rng.normal(0, 0.1, len(users))
    predicted = bpmf.posterior_mean_ratings(users, items, ratings, 60, 80, num_factors=4, num_sweeps=120,
                                            burn_in=20, alpha=50.0)
    held_out = ~observed
    held_out[0], held_out[:, 0] = False, False
    rmse = np.sqrt(np.mean((predicted - truth)[held_out] ** 2))
    assert rmse < 0.35 * np.std(truth[held_out])
    assert np.all(np.isfinite(predicted[0])) and abs(predicted[0].mean() - ratings.mean()) < 0.3


def test_an_interrupted_and_resumed_run_equals_an_uninterrupted_one(movielens_ratings, tmp_path):
    """The dot model, 2 epochs of compiled epochs (one step each): stopped after epoch 1, rerun in the same
    workdir, it ends with the uninterrupted run's parameters and optimizer state bit for bit, and its metrics."""
    config = movielens.get_config("dot")
    config.update(num_epochs=2, interpret=False)
    straight = movielens.train_and_evaluate(config, str(tmp_path / "straight"))
    assert movielens.train_and_evaluate(config, str(tmp_path / "resumed"), stop_at=1) == {}
    assert Checkpointer(str(tmp_path / "resumed" / "checkpoints")).latest_step() == 1
    resumed = movielens.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert resumed["metrics"] == straight["metrics"]
    a = Checkpointer(str(tmp_path / "straight" / "checkpoints")).manager.restore(2)["state"]
    b = Checkpointer(str(tmp_path / "resumed" / "checkpoints")).manager.restore(2)["state"]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
