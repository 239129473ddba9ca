r"""Held-out evaluation of a PFN against Gaussian-process posteriors on its own prior.

Datasets are drawn from a GP task prior. Each is split at a random number of training
points, uniform between ``min_train`` and ``max_train``, and the rest are test points.
For each dataset the mean negative log density of the noisy test targets is computed under

* the PFN's bar distribution,
* the exact GP posterior predictive with the hyperparameters the dataset was drawn with
  (the Bayes-optimal predictive for a prior with fixed hyperparameters, and an oracle for
  a prior with hyperpriors),
* that exact predictive put onto the PFN's buckets (:meth:`BarDistribution.project`): the
  floor that the bar format alone imposes,
* optionally a GP whose hyperparameters are fitted by maximising the marginal likelihood
  (type-II maximum likelihood), the usual practice when hyperparameters are unknown.

The figures are means over datasets of the per-point means, with standard errors.
For a prior with ``latent_targets=True`` every predictive is scored on the noise-free
values ``f`` at the test inputs instead, and the GP predictives leave out the noise.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from probnn.pfn.bar import BarDistribution
from probnn.pfn.model import standardize_targets
from probnn.pfn.network import PriorFittedNetwork
from probnn.priors.tasks import GPHyperTaskPrior, GPTaskPrior

__all__ = ["EvaluationResult", "evaluate_pfn"]


@dataclasses.dataclass
class EvaluationResult:
    """Per-dataset mean test NLLs (nats per point) of each predictive."""

    num_train: np.ndarray
    nll: dict[str, np.ndarray]
    seconds: dict[str, float]

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, values in self.nll.items():
            finite = values[np.isfinite(values)]
            out[name] = {
                "mean": float(np.mean(finite)),
                "stderr": float(np.std(finite, ddof=1) / math.sqrt(max(finite.size, 1))),
                "datasets": int(finite.size),
                "seconds": round(self.seconds.get(name, float("nan")), 2),
            }
        return out

    def gap(self, name: str, reference: str = "exact") -> tuple[float, float]:
        """Mean and standard error of the paired difference ``nll[name] - nll[reference]``."""
        diff = self.nll[name] - self.nll[reference]
        diff = diff[np.isfinite(diff)]
        return float(np.mean(diff)), float(np.std(diff, ddof=1) / math.sqrt(diff.size))


def _exact_predictive(prior, x, y, mask, hyper, latent=False):
    """Exact GP predictive at every point given the masked training set (float64).

    Of noisy targets, or of the noise-free function where ``latent``.
    """
    gram = prior.gram(x, hyper.lengthscale, hyper.outputscale)
    noise = hyper.noise_variance
    pair = mask[:, None] & mask[None, :]
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    system = jnp.where(pair, gram + noise * eye, eye)
    cross = jnp.where(mask[None, :], gram, 0.0)
    factor = jnp.linalg.cholesky(system)
    alpha = jax.scipy.linalg.cho_solve((factor, True), jnp.where(mask, y, 0.0))
    v = jax.scipy.linalg.solve_triangular(factor, cross.T, lower=True)
    mean = cross @ alpha
    variance = jnp.diag(gram) + jnp.where(latent, 0.0, noise) - jnp.sum(v**2, axis=0)
    return mean, jnp.sqrt(jnp.maximum(variance, 1e-12))


def _pfn_nll_and_floor(pfn: PriorFittedNetwork, x, y, target, mask, num_features, exact_mean, exact_sd):
    """PFN and format-floor NLLs of ``target`` per point for one dataset (test points where ``mask`` is false)."""
    config = pfn.config
    x_pad = jnp.pad(x, ((0, 0), (0, config.max_features - x.shape[-1])))
    if config.normalize_y:
        loc, scale = standardize_targets(y, mask)
    else:
        loc, scale = jnp.zeros((), y.dtype), jnp.ones((), y.dtype)
    logits = pfn.network(x_pad, (y - loc) / scale, mask, num_features)
    bar = BarDistribution(pfn.borders, logits).affine(loc, scale)
    pfn_nll = -bar.log_prob(target)
    floor = bar.project(dist.Normal(exact_mean.astype(bar.logits.dtype), exact_sd.astype(bar.logits.dtype)))
    floor_nll = -floor.log_prob(target)
    return pfn_nll, floor_nll


def _masked_mean(values, test):
    return jnp.sum(jnp.where(test, values, 0.0), axis=-1) / jnp.sum(test, axis=-1)


def evaluate_pfn(
    pfn: PriorFittedNetwork,
    prior: GPTaskPrior | GPHyperTaskPrior,
    *,
    num_datasets: int = 1000,
    num_points: int | None = None,
    min_train: int = 5,
    max_train: int | None = None,
    seed: int = 12345,
    batch_size: int = 100,
    fitted_gp_datasets: int = 0,
) -> EvaluationResult:
    """Compare a PFN with GP posteriors on datasets drawn from a GP task prior.

    Parameters
    ----------
    pfn : PriorFittedNetwork
    prior : GPTaskPrior or GPHyperTaskPrior
        Its ``max_features`` must not exceed the PFN's.
    num_datasets : int
    num_points : int, optional
        Points per dataset; defaults to ``max_train + 10``.
    min_train, max_train : int
        Range of the training-set size; ``max_train`` defaults to the PFN's limit.
    seed : int
        Seed of the datasets, so that runs are comparable.
    batch_size : int
        Datasets per compiled call.
    fitted_gp_datasets : int
        Also fit a GP by marginal likelihood on the first this many datasets (slow: one
        L-BFGS fit per dataset).

    Notes
    -----
    Datasets are drawn and the PFN runs in float32 whatever the global precision, so a
    seed gives the same datasets everywhere. The exact GP runs in float64.
    """
    with jax.enable_x64(False):
        return _evaluate(pfn, prior, num_datasets, num_points, min_train, max_train, seed, batch_size, fitted_gp_datasets)


def _evaluate(pfn, prior, num_datasets, num_points, min_train, max_train, seed, batch_size, fitted_gp_datasets):
    if not isinstance(prior, (GPTaskPrior, GPHyperTaskPrior)):
        raise ValueError(f"evaluate_pfn needs a GP task prior with known hyperparameters, got {type(prior).__name__}.")
    max_train = pfn.config.max_train_points if max_train is None else int(max_train)
    if not 0 < min_train <= max_train <= pfn.config.max_train_points:
        raise ValueError(
            f"Need 0 < min_train ({min_train}) <= max_train ({max_train}) <= the PFN's max_train_points "
            f"({pfn.config.max_train_points})."
        )
    if prior.max_features > pfn.config.max_features:
        raise ValueError(
            f"The prior has {prior.max_features} features but the PFN was trained for at most "
            f"max_features = {pfn.config.max_features}."
        )
    num_points = max_train + 10 if num_points is None else int(num_points)
    if num_points <= max_train:
        raise ValueError(f"num_points ({num_points}) must exceed max_train ({max_train}).")
    num_batches = -(-num_datasets // batch_size)
    latent = bool(getattr(prior, "latent_targets", False))

    @jax.jit
    def pfn_batch(pfn, x, y, target, mask, num_features, mean, sd):
        return jax.vmap(lambda *a: _pfn_nll_and_floor(pfn, *a))(x, y, target, mask, num_features, mean, sd)

    counts, nll = [], {"pfn": [], "exact": [], "bar-floor": []}
    seconds = {"pfn": 0.0, "exact": 0.0}
    data = []
    for index in range(num_batches):
        key = jax.random.fold_in(jax.random.key(seed), index)
        key_data, key_split = jax.random.split(key)
        batch = prior.sample(key_data, batch_size, num_points)
        hyper = prior.sample_hyperparameters(key_data, batch_size)
        count = jax.random.randint(key_split, (batch_size,), min_train, max_train + 1)
        mask = jnp.arange(num_points)[None, :] < count[:, None]
        test = ~mask
        target = batch.f if latent else batch.y

        with jax.enable_x64(True):
            x64, y64 = jnp.asarray(batch.x, jnp.float64), jnp.asarray(batch.y, jnp.float64)
            target64 = jnp.asarray(target, jnp.float64)
            hyper64 = jax.tree_util.tree_map(
                lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, hyper
            )
            start = time.perf_counter()
            mean, sd = _exact_batch(prior, x64, y64, mask, hyper64, latent)
            exact_nll = -dist.Normal(mean, sd).log_prob(target64)
            exact_nll = np.asarray(_masked_mean(exact_nll, test))
            seconds["exact"] += time.perf_counter() - start

        start = time.perf_counter()
        pfn_nll, floor_nll = pfn_batch(
            pfn, batch.x, batch.y, target, mask, batch.num_features, mean.astype(jnp.float32), sd.astype(jnp.float32)
        )
        pfn_nll = np.asarray(_masked_mean(pfn_nll, test))
        seconds["pfn"] += time.perf_counter() - start
        nll["pfn"].append(pfn_nll)
        nll["exact"].append(exact_nll)
        nll["bar-floor"].append(np.asarray(_masked_mean(floor_nll, test)))
        counts.append(np.asarray(count))
        if fitted_gp_datasets:
            data.append(
                (np.asarray(batch.x), np.asarray(batch.y), np.asarray(target), np.asarray(mask), np.asarray(batch.num_features))
            )

    result = EvaluationResult(
        np.concatenate(counts)[:num_datasets],
        {name: np.concatenate(values)[:num_datasets] for name, values in nll.items()},
        seconds,
    )
    if fitted_gp_datasets:
        start = time.perf_counter()
        fitted = _fitted_gp_nll(data, fitted_gp_datasets, prior)
        result.seconds["gp-ml2"] = time.perf_counter() - start
        full = np.full(num_datasets, np.nan)
        full[: fitted.size] = fitted
        result.nll["gp-ml2"] = full
    return result


@jax.jit
def _exact_batch(prior, x, y, mask, hyper, latent):
    return jax.vmap(lambda *a: _exact_predictive(prior, *a, latent=latent))(x, y, mask, hyper)


def _fitted_gp_nll(data, limit: int, prior) -> np.ndarray:
    """Test NLL of a GP with an RBF kernel (ARD) fitted by marginal likelihood, per dataset.

    Scored on the noise-free targets with the latent predictive where the prior has them.
    """
    from probnn.kernels import RBF
    from probnn.processes import GaussianProcess

    kernel_name = getattr(prior, "kernel", "rbf")
    latent = bool(getattr(prior, "latent_targets", False))
    values = []
    with jax.enable_x64(True):
        for x, y, target, mask, num_features in data:
            for b in range(x.shape[0]):
                if len(values) >= limit:
                    return np.asarray(values)
                d = int(num_features[b])
                train, test = mask[b], ~mask[b]
                X = x[b, :, :d].astype(np.float64)
                if kernel_name == "matern52":
                    from probnn.kernels import Matern52

                    kernel = Matern52().with_input_dim(d)
                else:
                    kernel = RBF().with_input_dim(d)
                posterior = GaussianProcess(kernel, num_restarts=3).fit(
                    X[train], y[b, train].astype(np.float64), key=jax.random.key(len(values))
                )
                predictive = posterior.predict(X[test], latent=latent)
                values.append(float(-jnp.mean(predictive.log_prob(jnp.asarray(target[b, test], jnp.float64)))))
    return np.asarray(values)
