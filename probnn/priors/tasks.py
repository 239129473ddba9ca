r"""Task priors: batched samplers of whole regression datasets.

A prior-fitted network learns the posterior predictive of a prior by reading many datasets
drawn from it, and a neural process learns from tasks in the same way. Every task prior
here draws a batch of ``B`` datasets of ``L`` points in one jitted call,

.. math::

    x_{b,i} \sim \mathcal{U}[0, 1]^{d_b}, \qquad f_b \sim \text{prior}, \qquad
    y_{b,i} = f_b(x_{b,i}) + \varepsilon_{b,i},

so data generation runs inside a training step instead of in Python. Inputs have
``max_features`` columns; a dataset that uses ``d_b < max_features`` features has zeros in
the rest, and ``num_features`` records ``d_b``.

Priors:

* :class:`GPTaskPrior`: a Gaussian process with fixed RBF or Matern-5/2 hyperparameters.
* :class:`GPHyperTaskPrior`: a GP whose lengthscales (one per feature), output scale and
  noise are drawn per dataset, with a random number of used features.
* :class:`BNNTaskPrior`: random MLPs with a drawn width, depth, activation and noise.
* :class:`NNGPTaskPrior`: the NNGP of :mod:`probnn.kernels`, optionally with a prior on the
  last-layer variance, which gives the Student-t and other scale-mixture processes of
  :mod:`probnn.processes`.

``TASK_PRIORS`` names the settings that probnn's shipped checkpoints were trained on.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float, Int

from probnn.kernels.nngp import NNGP
from probnn.kernels.stationary import scaled_squared_distance

__all__ = [
    "BNNTaskPrior",
    "GPHyperTaskPrior",
    "GPHyperparameters",
    "GPTaskPrior",
    "NNGPTaskPrior",
    "TASK_PRIORS",
    "TaskBatch",
    "TaskPrior",
    "make_task_prior",
]

#: Jitter added to every Gram diagonal, relative to the output scale, so that float32
#: Cholesky factorisations of smooth kernels with little noise succeed.
_JITTER = 1e-5

_STATIONARY_KERNELS = ("rbf", "matern52")


class TaskBatch(NamedTuple):
    """A batch of ``B`` datasets of ``L`` points each.

    Attributes
    ----------
    x : array of shape (B, L, max_features)
        Inputs in the unit cube, zero in the unused feature columns.
    y : array of shape (B, L)
        Noisy targets.
    num_features : int array of shape (B,)
        Number of used features of each dataset.
    f : array of shape (B, L) or None
        The noise-free function values behind ``y``, from priors built with
        ``latent_targets=True``; ``None`` otherwise. A PFN trained on such a prior learns the
        predictive of ``f`` at held-out inputs, what expected improvement needs.
    """

    x: Float[Array, "B L D"]
    y: Float[Array, "B L"]
    num_features: Int[Array, " B"]
    f: Float[Array, "B L"] | None = None


def _check_positive(value, name: str) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}.")
    return value


def _check_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_range(values, name: str) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high, got {values!r}.")
    return low, high


def _check_sample_shape(batch_size, num_points) -> tuple[int, int]:
    return _check_count(batch_size, "batch_size"), _check_count(num_points, "num_points")


class TaskPrior(eqx.Module):
    """Base class: a prior over regression datasets with inputs in the unit cube.

    Subclasses implement :meth:`_sample`; :meth:`sample` checks the sizes and calls it.
    A prior is an immutable pytree, so it can be passed into jitted functions, and its
    settings are static.
    """

    max_features: int = eqx.field(static=True)

    def sample(self, key: Array, batch_size: int, num_points: int) -> TaskBatch:
        """Draw ``batch_size`` datasets of ``num_points`` points each.

        ``batch_size`` and ``num_points`` set array shapes, so each new pair compiles once.
        """
        batch_size, num_points = _check_sample_shape(batch_size, num_points)
        return _sample_jit(self, key, batch_size, num_points)

    def _sample(self, key: Array, batch_size: int, num_points: int) -> TaskBatch:
        raise NotImplementedError

    def config(self) -> dict:
        """Return the settings as a JSON-serialisable dictionary, with the class name under ``"type"``."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {"type": type(self).__name__, **_jsonable(fields)}


@eqx.filter_jit
def _sample_jit(prior: TaskPrior, key, batch_size: int, num_points: int) -> TaskBatch:
    # Python integers are static under filter_jit, so each (batch_size, num_points) pair
    # compiles once; inside a caller's jit this is inlined.
    return prior._sample(key, batch_size, num_points)


def _jsonable(fields: dict) -> dict:
    out = {}
    for name, value in fields.items():
        if isinstance(value, (tuple, list)):
            value = [v for v in value]
        elif isinstance(value, np.generic):
            value = value.item()
        out[name] = value
    return out


def _uniform_inputs(key, batch_size, num_points, num_features, max_features):
    x = jax.random.uniform(key, (batch_size, num_points, max_features))
    used = jnp.arange(max_features)[None, None, :] < num_features[:, None, None]
    return jnp.where(used, x, 0.0)


def _stationary_gram(kernel: str, x, lengthscale, outputscale):
    """Gram matrix of one dataset: ``x`` (L, D), ``lengthscale`` (D,), ``outputscale`` scalar."""
    r2 = scaled_squared_distance(x, x, lengthscale)
    if kernel == "rbf":
        return outputscale * jnp.exp(-0.5 * r2)
    r = jnp.sqrt(jnp.maximum(r2, 1e-30))
    sqrt5_r = jnp.sqrt(5.0) * r
    return outputscale * (1.0 + sqrt5_r + 5.0 / 3.0 * r2) * jnp.exp(-sqrt5_r)


def _gaussian_draw(key, gram, noise_variance, jitter):
    """Draw ``y ~ N(0, gram + noise I)`` for a batch of Gram matrices ``(B, L, L)``."""
    num_points = gram.shape[-1]
    eye = jnp.eye(num_points, dtype=gram.dtype)
    cov = gram + (jnp.asarray(noise_variance)[..., None, None] + jnp.asarray(jitter)[..., None, None]) * eye
    factor = jnp.linalg.cholesky(cov)
    z = jax.random.normal(key, gram.shape[:-1], dtype=gram.dtype)
    return jnp.einsum("bij,bj->bi", factor, z)


def _latent_and_noisy_draw(key, gram, noise_variance):
    """Draw ``f ~ N(0, gram)`` and ``y = f + noise``; returns ``(f, y)``.

    ``f`` comes from the symmetric eigendecomposition with negative eigenvalues clipped to
    zero, because a float32 Cholesky factor of a smooth Gram matrix without noise fails.
    The stream differs from :func:`_gaussian_draw`'s for the same key.
    """
    key_f, key_e = jax.random.split(key)
    eigenvalues, eigenvectors = jnp.linalg.eigh(gram)
    z = jax.random.normal(key_f, gram.shape[:-1], dtype=gram.dtype)
    f = jnp.einsum("bij,bj->bi", eigenvectors, jnp.sqrt(jnp.maximum(eigenvalues, 0.0)) * z)
    noise_sd = jnp.sqrt(jnp.asarray(noise_variance, gram.dtype))
    noise = jax.random.normal(key_e, f.shape, dtype=gram.dtype)
    return f, f + noise_sd[..., None] * noise


class GPHyperparameters(NamedTuple):
    """Hyperparameters of a batch of GP datasets: (B,), (B, max_features), (B,), (B,)."""

    num_features: Int[Array, " B"]
    lengthscale: Float[Array, "B D"]
    outputscale: Float[Array, " B"]
    noise_variance: Float[Array, " B"]


class GPTaskPrior(TaskPrior):
    """Datasets from a Gaussian process with fixed hyperparameters.

    Parameters
    ----------
    kernel : {"rbf", "matern52"}
    lengthscale : float
        Lengthscale shared by every feature.
    outputscale : float
        Prior variance of ``f``.
    noise_variance : float
        Variance of the Gaussian observation noise.
    num_features : int
        Number of input features; all of them are used.

    Examples
    --------
    >>> import jax
    >>> prior = GPTaskPrior(lengthscale=0.2, noise_variance=0.01)
    >>> batch = prior.sample(jax.random.key(0), batch_size=8, num_points=50)
    >>> batch.x.shape, batch.y.shape
    ((8, 50, 1), (8, 50))
    """

    kernel: str = eqx.field(static=True)
    lengthscale: float = eqx.field(static=True)
    outputscale: float = eqx.field(static=True)
    noise_variance: float = eqx.field(static=True)

    def __init__(
        self,
        kernel: str = "rbf",
        lengthscale: float = 0.2,
        outputscale: float = 1.0,
        noise_variance: float = 0.01,
        num_features: int = 1,
    ):
        if kernel not in _STATIONARY_KERNELS:
            raise ValueError(f"kernel must be one of {_STATIONARY_KERNELS}, got {kernel!r}.")
        self.kernel = kernel
        self.lengthscale = _check_positive(lengthscale, "lengthscale")
        self.outputscale = _check_positive(outputscale, "outputscale")
        self.noise_variance = _check_positive(noise_variance, "noise_variance")
        self.max_features = _check_count(num_features, "num_features")

    def _sample(self, key, batch_size, num_points):
        key_x, key_y = jax.random.split(key)
        num_features = jnp.full((batch_size,), self.max_features, dtype=jnp.int32)
        x = jax.random.uniform(key_x, (batch_size, num_points, self.max_features))
        lengthscale = jnp.full((self.max_features,), self.lengthscale)
        gram = jax.vmap(lambda xb: _stationary_gram(self.kernel, xb, lengthscale, self.outputscale))(x)
        y = _gaussian_draw(key_y, gram, self.noise_variance, _JITTER * self.outputscale)
        return TaskBatch(x, y, num_features)

    def sample_hyperparameters(self, key, batch_size: int) -> GPHyperparameters:
        """Return the fixed hyperparameters, repeated for ``batch_size`` datasets (``key`` is unused)."""
        del key
        return GPHyperparameters(
            jnp.full((batch_size,), self.max_features, jnp.int32),
            jnp.full((batch_size, self.max_features), self.lengthscale),
            jnp.full((batch_size,), self.outputscale),
            jnp.full((batch_size,), self.noise_variance),
        )

    def gram(self, x, lengthscale, outputscale):
        """Prior covariance of ``f`` at ``x`` (without noise), for exact-posterior comparisons."""
        return _stationary_gram(self.kernel, x, lengthscale, outputscale)


class GPHyperTaskPrior(TaskPrior):
    r"""Datasets from a Gaussian process whose hyperparameters are drawn per dataset.

    For each dataset: the number of used features ``d`` is uniform on
    ``{min_features, ..., max_features}``; each used feature gets its own lengthscale
    (automatic relevance determination),

    .. math::

        \log \ell_j \sim \mathcal{N}(\log \ell_0 + \tfrac12 \log d,\ \sigma_\ell^2),\qquad
        \log v \sim \mathcal{N}(0, \sigma_v^2),\qquad
        \log \sigma^2_\varepsilon \sim \mathcal{U}[\log a, \log b],

    where the :math:`\sqrt d` factor keeps the typical distance between points, measured in
    lengthscales, about the same as ``d`` grows. The noise variance is relative to the
    output scale ``v``.

    Parameters
    ----------
    max_features : int
    min_features : int
    kernel : {"rbf", "matern52"}
    lengthscale_median : float
        :math:`\ell_0`, the median lengthscale in one dimension.
    lengthscale_log_sd : float
        :math:`\sigma_\ell`.
    outputscale_log_sd : float
        :math:`\sigma_v`.
    noise_variance_range : (float, float)
        ``(a, b)``, bounds of the log-uniform relative noise variance.
    latent_targets : bool
        Also return the noise-free values ``f`` (:attr:`TaskBatch.f`), so that a PFN learns
        to predict the function rather than a new noisy observation.
    """

    min_features: int = eqx.field(static=True)
    kernel: str = eqx.field(static=True)
    lengthscale_median: float = eqx.field(static=True)
    lengthscale_log_sd: float = eqx.field(static=True)
    outputscale_log_sd: float = eqx.field(static=True)
    noise_variance_range: tuple = eqx.field(static=True)
    latent_targets: bool = eqx.field(static=True)

    def __init__(
        self,
        max_features: int = 6,
        min_features: int = 1,
        kernel: str = "rbf",
        lengthscale_median: float = 0.35,
        lengthscale_log_sd: float = 0.6,
        outputscale_log_sd: float = 0.5,
        noise_variance_range=(1e-4, 0.1),
        latent_targets: bool = False,
    ):
        if kernel not in _STATIONARY_KERNELS:
            raise ValueError(f"kernel must be one of {_STATIONARY_KERNELS}, got {kernel!r}.")
        self.max_features = _check_count(max_features, "max_features")
        self.min_features = _check_count(min_features, "min_features")
        if self.min_features > self.max_features:
            raise ValueError(
                f"min_features ({self.min_features}) must not exceed max_features ({self.max_features})."
            )
        self.kernel = kernel
        self.lengthscale_median = _check_positive(lengthscale_median, "lengthscale_median")
        self.lengthscale_log_sd = float(lengthscale_log_sd)
        self.outputscale_log_sd = float(outputscale_log_sd)
        if self.lengthscale_log_sd < 0 or self.outputscale_log_sd < 0:
            raise ValueError("lengthscale_log_sd and outputscale_log_sd must be >= 0.")
        self.noise_variance_range = _check_range(noise_variance_range, "noise_variance_range")
        self.latent_targets = bool(latent_targets)

    def sample_hyperparameters(self, key, batch_size: int) -> GPHyperparameters:
        """Return the per-dataset hyperparameters that :meth:`sample` draws with the same key."""
        key_d, _, key_l, key_v, key_n, _ = jax.random.split(key, 6)
        num_features = jax.random.randint(key_d, (batch_size,), self.min_features, self.max_features + 1)
        log_median = math.log(self.lengthscale_median) + 0.5 * jnp.log(num_features.astype(jnp.float32))
        log_l = log_median[:, None] + self.lengthscale_log_sd * jax.random.normal(key_l, (batch_size, self.max_features))
        outputscale = jnp.exp(self.outputscale_log_sd * jax.random.normal(key_v, (batch_size,)))
        low, high = self.noise_variance_range
        log_noise = jax.random.uniform(key_n, (batch_size,), minval=math.log(low), maxval=math.log(high))
        return GPHyperparameters(num_features, jnp.exp(log_l), outputscale, outputscale * jnp.exp(log_noise))

    def _sample(self, key, batch_size, num_points):
        _, key_x, _, _, _, key_y = jax.random.split(key, 6)
        hyper = self.sample_hyperparameters(key, batch_size)
        x = _uniform_inputs(key_x, batch_size, num_points, hyper.num_features, self.max_features)
        gram = jax.vmap(lambda xb, lb, vb: _stationary_gram(self.kernel, xb, lb, vb))(
            x, hyper.lengthscale, hyper.outputscale
        )
        if self.latent_targets:
            f, y = _latent_and_noisy_draw(key_y, gram, hyper.noise_variance)
            return TaskBatch(x, y, hyper.num_features, f)
        y = _gaussian_draw(key_y, gram, hyper.noise_variance, _JITTER * hyper.outputscale)
        return TaskBatch(x, y, hyper.num_features)

    def gram(self, x, lengthscale, outputscale):
        """Prior covariance of ``f`` at ``x`` for one dataset's hyperparameters."""
        return _stationary_gram(self.kernel, x, lengthscale, outputscale)


_BNN_ACTIVATIONS = ("tanh", "relu", "sin")


class BNNTaskPrior(TaskPrior):
    r"""Datasets from randomly drawn MLPs.

    For each dataset the number of used features, the depth (hidden layers, uniform on
    ``depths``), the width (uniform on ``{min_width, ..., max_width}``), the activation
    (uniform over ``activations``) and the noise standard deviation (log-uniform on
    ``noise_std_range``) are drawn. Weights are :math:`\mathcal{N}(0, \sigma_w^2 / n_{in})`
    with :math:`n_{in}` the number of used units feeding the layer, biases
    :math:`\mathcal{N}(0, \sigma_b^2)`. Targets are standardised over the dataset's points
    before the noise is added, so the function has unit variance.

    The widths and depths are realised by masking a network of the largest size, so one
    compiled program serves every draw.
    """

    depths: tuple = eqx.field(static=True)
    min_width: int = eqx.field(static=True)
    max_width: int = eqx.field(static=True)
    activations: tuple = eqx.field(static=True)
    weight_std: float = eqx.field(static=True)
    bias_std: float = eqx.field(static=True)
    noise_std_range: tuple = eqx.field(static=True)

    def __init__(
        self,
        max_features: int = 6,
        depths=(1, 2, 3),
        min_width: int = 8,
        max_width: int = 64,
        activations=("tanh", "relu", "sin"),
        weight_std: float = 1.5,
        bias_std: float = 0.5,
        noise_std_range=(0.01, 0.3),
    ):
        self.max_features = _check_count(max_features, "max_features")
        depths = tuple(int(d) for d in depths)
        if not depths or min(depths) < 1:
            raise ValueError(f"depths must be a non-empty sequence of integers >= 1, got {depths!r}.")
        self.depths = depths
        self.min_width = _check_count(min_width, "min_width")
        self.max_width = _check_count(max_width, "max_width")
        if self.min_width > self.max_width:
            raise ValueError(f"min_width ({min_width}) must not exceed max_width ({max_width}).")
        unknown = [a for a in activations if a not in _BNN_ACTIVATIONS]
        if unknown or not activations:
            raise ValueError(f"activations must be drawn from {_BNN_ACTIVATIONS}, got {activations!r}.")
        self.activations = tuple(activations)
        self.weight_std = _check_positive(weight_std, "weight_std")
        self.bias_std = float(bias_std)
        self.noise_std_range = _check_range(noise_std_range, "noise_std_range")

    def _sample(self, key, batch_size, num_points):
        keys = iter(jax.random.split(key, 9))
        B, W, D = batch_size, self.max_width, self.max_features
        max_depth = max(self.depths)
        num_features = jax.random.randint(next(keys), (B,), 1, D + 1)
        x = _uniform_inputs(next(keys), B, num_points, num_features, D)
        depth = jnp.asarray(self.depths)[jax.random.randint(next(keys), (B,), 0, len(self.depths))]
        width = jax.random.randint(next(keys), (B,), self.min_width, W + 1)
        activation = jax.random.randint(next(keys), (B,), 0, len(self.activations))
        log_low, log_high = (math.log(v) for v in self.noise_std_range)
        noise_std = jnp.exp(jax.random.uniform(next(keys), (B,), minval=log_low, maxval=log_high))
        # All weights in one draw: the first layer (D x W), the hidden layers (W x W) and
        # the readout; biases for every hidden layer.
        sizes = [D * W] + [W * W] * (max_depth - 1) + [W]
        weights = jax.random.normal(next(keys), (B, sum(sizes)), dtype=x.dtype)
        biases = self.bias_std * jax.random.normal(next(keys), (B, max_depth, W), dtype=x.dtype)
        offsets = np.cumsum([0] + sizes)

        unit_mask = (jnp.arange(W)[None, :] < width[:, None]).astype(x.dtype)[:, None, :]
        hidden = x
        fan_in = num_features.astype(x.dtype)
        for layer in range(max_depth):
            rows = D if layer == 0 else W
            weight = weights[:, offsets[layer] : offsets[layer + 1]].reshape(B, rows, W)
            weight = weight * (self.weight_std / jnp.sqrt(fan_in))[:, None, None]
            pre = jnp.einsum("bli,bio->blo", hidden, weight) + biases[:, layer, None, :]
            branches = [_activate(name, pre) for name in self.activations]
            choice = activation[:, None, None]
            post = jnp.select([choice == i for i in range(len(branches))], branches) * unit_mask
            # Layers past the drawn depth pass the hidden state through unchanged.
            hidden = post if layer == 0 else jnp.where((layer < depth)[:, None, None], post, hidden)
            fan_in = width.astype(x.dtype)
        readout = weights[:, offsets[-2] :] / jnp.sqrt(fan_in)[:, None]
        f = jnp.einsum("blo,bo->bl", hidden, readout)
        f = (f - jnp.mean(f, axis=1, keepdims=True)) / (jnp.std(f, axis=1, keepdims=True) + 1e-6)
        noise = noise_std[:, None] * jax.random.normal(next(keys), f.shape, dtype=x.dtype)
        return TaskBatch(x, f + noise, num_features)


def _activate(name: str, pre):
    if name == "tanh":
        return jnp.tanh(pre)
    if name == "relu":
        return jax.nn.relu(pre)
    return jnp.sin(pre)


class NNGPTaskPrior(TaskPrior):
    r"""Datasets from the NNGP of an infinitely wide network, optionally a scale mixture.

    :math:`f \mid s \sim \mathcal{GP}(0, s\,k)` with ``k`` an :class:`~probnn.kernels.NNGP`
    kernel and the noise :math:`\varepsilon \sim \mathcal{N}(0, s\,\sigma^2)`. With
    ``scale_prior=None`` the last-layer variance ``s`` is 1 (a Gaussian process); with an
    inverse-gamma prior the datasets come from the Student-t process of
    :class:`~probnn.processes.StudentTProcess`; any other positive distribution (the
    Burr XII of :mod:`probnn.priors.scale`, ...) gives that scale mixture.

    Parameters
    ----------
    kernel : NNGP, optional
        Defaults to the depth-3 ReLU correlation kernel used by probnn's BO surrogates.
    scale_prior : numpyro Distribution, optional
        Prior on ``s``; scalar batch shape.
    noise_variance : float
    num_features : int
    """

    kernel: NNGP
    scale_prior: dist.Distribution | None
    noise_variance: float = eqx.field(static=True)

    def __init__(self, kernel: NNGP | None = None, scale_prior=None, noise_variance: float = 0.01, num_features: int = 1):
        if kernel is None:
            kernel = NNGP(depth=3, activation="relu", input_offset=0.5, normalize=True)
        if not isinstance(kernel, NNGP):
            raise ValueError(f"kernel must be a probnn.kernels.NNGP, got {type(kernel).__name__}.")
        if scale_prior is not None and not isinstance(scale_prior, dist.Distribution):
            raise ValueError(f"scale_prior must be a numpyro Distribution or None, got {type(scale_prior).__name__}.")
        self.kernel = kernel
        self.scale_prior = scale_prior
        self.noise_variance = _check_positive(noise_variance, "noise_variance")
        self.max_features = _check_count(num_features, "num_features")

    def config(self) -> dict:
        scale = None
        if self.scale_prior is not None:
            scale = {"type": type(self.scale_prior).__name__}
        return {
            "type": type(self).__name__,
            "depth": self.kernel.depth,
            "activation": self.kernel.activation,
            "scale_prior": scale,
            "noise_variance": self.noise_variance,
            "max_features": self.max_features,
        }

    def _sample(self, key, batch_size, num_points):
        key_x, key_s, key_y = jax.random.split(key, 3)
        num_features = jnp.full((batch_size,), self.max_features, dtype=jnp.int32)
        x = jax.random.uniform(key_x, (batch_size, num_points, self.max_features))
        kernel = jax.tree_util.tree_map(lambda a: jnp.asarray(a, x.dtype) if eqx.is_array(a) else a, self.kernel)
        gram = jax.vmap(kernel.gram)(x)
        if self.scale_prior is None:
            scale = jnp.ones((batch_size,), x.dtype)
        else:
            scale = self.scale_prior.sample(key_s, (batch_size,)).astype(x.dtype)
        y = _gaussian_draw(key_y, gram, self.noise_variance, _JITTER)
        return TaskBatch(x, jnp.sqrt(scale)[:, None] * y, num_features)


def _tp_nngp_prior():
    return NNGPTaskPrior(scale_prior=dist.InverseGamma(2.0, 2.0))


#: Named task priors. ``gp-rbf-1d``, ``gp-hyper`` and ``gp-hyper-bo`` are the priors of the
#: shipped PFN checkpoints. ``gp-hyper-bo`` has less noise (BO objectives are often exact)
#: and carries the noise-free values, which its PFN learns to predict.
TASK_PRIORS = {
    "gp-rbf-1d": lambda: GPTaskPrior(kernel="rbf", lengthscale=0.2, outputscale=1.0, noise_variance=0.01),
    "gp-hyper": lambda: GPHyperTaskPrior(max_features=6),
    "gp-hyper-bo": lambda: GPHyperTaskPrior(max_features=6, noise_variance_range=(1e-6, 1e-2), latent_targets=True),
    "bnn": lambda: BNNTaskPrior(max_features=6),
    "nngp": lambda: NNGPTaskPrior(),
    "tp-nngp": _tp_nngp_prior,
}


def make_task_prior(name: str) -> TaskPrior:
    """Build the named task prior; raises ``ValueError`` naming the choices for unknown names."""
    if name not in TASK_PRIORS:
        raise ValueError(f"Unknown task prior {name!r}; choose one of {', '.join(TASK_PRIORS)}.")
    return TASK_PRIORS[name]()
