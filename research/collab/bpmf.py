"""Bayesian probabilistic matrix factorisation (Salakhutdinov & Mnih, ICML 2008) by Gibbs sampling.

The model: rating = mean + <U_u, V_i> + noise of precision `alpha`; the rows of U (and of V) are drawn from
N(mu, Lambda^-1), with a Gaussian-Wishart prior on (mu, Lambda) (mu0 = 0, beta0, W0 = I, nu0 = D). A sweep
draws U's hyperparameters from their conditional, then every user's factors at once (a D x D Gaussian per
user, batched Cholesky solves), then the same for V. The prediction is the average over the sweeps after
`burn_in` of each sample's ratings, clipped to the rating range: averaging over the posterior, rather than
fitting one point estimate, is what regularises the model (no weight decay or learning rate to tune).

Index 0 of users and of items (the id training never saw) has no ratings, so its samples come from the
population prior: its averaged scores are those of an average user (item), the global-mean path.
The whole chain is one jitted `lax.fori_loop`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np


def wishart(key: jax.Array, scale_DxD: jax.Array, df) -> jax.Array:
    """A draw from Wishart(scale, df) (mean df * scale), by Bartlett's decomposition."""
    d = scale_DxD.shape[0]
    chi2_key, normal_key = jax.random.split(key)
    chi2_D = jax.random.chisquare(chi2_key, df - jnp.arange(d), (d,))
    lower_DxD = jnp.tril(jax.random.normal(normal_key, (d, d)), -1) + jnp.diag(jnp.sqrt(chi2_D))
    factor_DxD = jnp.linalg.cholesky(scale_DxD) @ lower_DxD
    return factor_DxD @ factor_DxD.T


def sample_hyperparameters(key: jax.Array, rows_NxD: jax.Array, beta0: float) -> tuple[jax.Array, jax.Array]:
    """(mu, Lambda) from their Gaussian-Wishart conditional given the rows."""
    n, d = rows_NxD.shape
    mean_D = rows_NxD.mean(0)
    centred = rows_NxD - mean_D
    beta, df = beta0 + n, d + n
    mu_D = n * mean_D / beta
    scale_inverse = jnp.eye(d) + centred.T @ centred + beta0 * n / beta * jnp.outer(mean_D, mean_D)
    wishart_key, normal_key = jax.random.split(key)
    precision_DxD = wishart(wishart_key, jnp.linalg.inv(scale_inverse), df)
    cholesky = jnp.linalg.cholesky(beta * precision_DxD)
    z_D = jax.random.normal(normal_key, (d,))
    return mu_D + jax.scipy.linalg.solve_triangular(cholesky.T, z_D, lower=False), precision_DxD


def sample_rows(key: jax.Array, rows_N: jax.Array, others_N: jax.Array, residual_N: jax.Array,
                other_MxD: jax.Array, num_rows: int, mu_D: jax.Array, precision_DxD: jax.Array,
                alpha: float) -> jax.Array:
    """Every row's factors (num_rows x D) from its Gaussian conditional given the other side's factors."""
    other_NxD = other_MxD[others_N]
    outer_NxDxD = other_NxD[:, :, None] * other_NxD[:, None, :]
    precision_RxDxD = precision_DxD + alpha * jax.ops.segment_sum(outer_NxDxD, rows_N, num_rows)
    linear_RxD = precision_DxD @ mu_D + alpha * jax.ops.segment_sum(residual_N[:, None] * other_NxD, rows_N, num_rows)
    z_RxD = jax.random.normal(key, linear_RxD.shape)

    def one_row(precision, linear, z):
        cholesky = jnp.linalg.cholesky(precision)
        mean = jax.scipy.linalg.cho_solve((cholesky, True), linear)
        return mean + jax.scipy.linalg.solve_triangular(cholesky.T, z, lower=False)

    return jax.vmap(one_row)(precision_RxDxD, linear_RxD, z_RxD)


@functools.partial(jax.jit, static_argnames=("num_users", "num_items", "num_factors", "num_sweeps", "burn_in"))
def _chain(key, users_N, items_N, ratings_N, num_users: int, num_items: int, num_factors: int, num_sweeps: int,
           burn_in: int, alpha: float, beta0: float, low: float, high: float) -> jax.Array:
    mean = ratings_N.mean()
    residual_N = ratings_N - mean
    user_key, item_key, key = jax.random.split(key, 3)
    users = 0.1 * jax.random.normal(user_key, (num_users, num_factors))
    items = 0.1 * jax.random.normal(item_key, (num_items, num_factors))

    def sweep(step, carry):
        users, items, key, total_UxI = carry
        key, user_hyper, item_hyper, user_key, item_key = jax.random.split(key, 5)
        mu, precision = sample_hyperparameters(user_hyper, users[1:], beta0)
        users = sample_rows(user_key, users_N, items_N, residual_N, items, num_users, mu, precision, alpha)
        mu, precision = sample_hyperparameters(item_hyper, items[1:], beta0)
        items = sample_rows(item_key, items_N, users_N, residual_N, users, num_items, mu, precision, alpha)
        kept = (step >= burn_in).astype(total_UxI.dtype)
        return users, items, key, total_UxI + kept * jnp.clip(mean + users @ items.T, low, high)

    total = jnp.zeros((num_users, num_items), jnp.float32)
    _, _, _, total_UxI = jax.lax.fori_loop(0, num_sweeps, sweep, (users, items, key, total))
    return total_UxI / (num_sweeps - burn_in)


def posterior_mean_ratings(users_N: np.ndarray, items_N: np.ndarray, ratings_N: np.ndarray, num_users: int,
                           num_items: int, num_factors: int = 10, num_sweeps: int = 300, burn_in: int = 20,
                           alpha: float = 1.5, beta0: float = 2.0, low: float = -np.inf, high: float = np.inf,
                           seed: int = 0) -> np.ndarray:
    """num_users x num_items predicted ratings: the average over the kept samples of the chain, each clipped to
    [low, high]."""
    if not 0 <= burn_in < num_sweeps:
        raise ValueError(f"burn_in={burn_in} must be in [0, num_sweeps={num_sweeps})")
    total = _chain(jax.random.key(seed), jnp.asarray(users_N, jnp.int32), jnp.asarray(items_N, jnp.int32),
                   jnp.asarray(ratings_N, jnp.float32), num_users, num_items, num_factors, num_sweeps, burn_in,
                   alpha, beta0, low, high)
    return np.asarray(total)
