r"""Deep ensembles: independently trained networks whose predictions form a mixture.

Lakshminarayanan, Pritzel and Blundell ("Simple and Scalable Predictive Uncertainty
Estimation using Deep Ensembles", NeurIPS 2017) train ``K`` networks from different random
initialisations and predict with the equal-weight mixture of their predictive
distributions. Here member ``k`` predicts a mean :math:`f_k(x)` and the predictive of a new
observation is

.. math::

    p(y_* \mid x_*) = \frac1K \sum_{k=1}^K \mathcal N\big(y_*;\, f_k(x_*),\, \sigma^2\big),

with one noise variance :math:`\sigma^2` estimated from held-out residuals (see
:class:`DeepEnsemble` for why this replaces the paper's variance head). All members train
in one program: ``equinox.filter_vmap`` over the members' keys and per-row training
weights, so bootstrap resampling (bagging) and random subsets are weights too.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, Float

from probnn.bnn._common import (
    NetworkData,
    check_fit_arguments,
    check_positive_integer,
    prepare_training_data,
)
from probnn.processes._data import check_test_inputs
from probnn.nets.mlp import MLP, check_activation, check_widths
from probnn.nets.train import TrainConfig, fit_network
from probnn.processes._data import float_dtype
from probnn.sharding import shard_batch

#: Ways to give each member its own view of the training data.
RESAMPLING = ("bootstrap", "subset", "none")

#: Training settings of :class:`DeepEnsemble` unless ``config`` is given.
DEFAULT_CONFIG = TrainConfig(learning_rate=1e-2, weight_decay=1e-4, num_steps=1000)


class DeepEnsemble(eqx.Module):
    r"""An ensemble of MLPs trained on resampled data, predicting a Gaussian mixture.

    Each member is an :class:`~probnn.nets.MLP` trained by :func:`~probnn.nets.fit_network`
    (AdamW, cosine decay, squared error) on standardised targets, with its own
    initialisation, minibatches and row weights:

    - ``bootstrap``: multinomial counts of ``n`` draws with replacement (bagging);
    - ``subset``: a random ``subset_fraction`` share of the rows, each once;
    - ``none``: every row once, so members differ only by initialisation.

    The noise variance :math:`\sigma^2` is the mean squared out-of-bag residual
    :math:`(y_i - f_k(x_i))^2` over the member-row pairs where member ``k`` did not train on
    row ``i``. With ``resampling="none"``, or when no row is out of bag (``n = 1``), the
    members' in-sample mean squared residual is used instead, which underestimates
    :math:`\sigma^2` when the networks overfit.

    The mean-only members with a held-out noise estimate replace the Gaussian NLL head of
    Lakshminarayanan et al. (2017). On the few dozen points of a BO run, a variance head
    fitted by maximum likelihood collapses onto the training residuals and is overconfident
    at new inputs. Out-of-bag residuals instead measure the error at inputs a member did not
    see. Because those residuals include each member's own error, not only the noise, the
    estimate is conservative (too large) for a well-specified model.

    Parameters
    ----------
    num_members : int
        Number of networks ``K``.
    widths : sequence of int
        Hidden-layer widths of every member.
    activation : str
        Hidden activation, a key of :data:`probnn.nets.ACTIVATIONS`.
    resampling : {"bootstrap", "subset", "none"}
        How each member's training rows are drawn.
    config : TrainConfig, optional
        Training settings of a fresh fit; :data:`DEFAULT_CONFIG` (1000 full-batch AdamW
        steps) by default. ``validation_fraction`` must be 0: members train for the full
        ``num_steps`` without early stopping.
    subset_fraction : float
        Share of the rows each member trains on with ``resampling="subset"`` (at least one row).
    warm_start_steps : int, optional
        Training steps of a warm-started fit (``num_restarts=1``), which continues from the
        previous members' parameters; ``config.num_steps // 4`` by default.
    noise_lower_bound : float
        Lower bound on the noise variance, on the standardised scale.
    latent_scale : float
        Component scale of the ``latent=True`` predictive, as a share of the target
        standard deviation. The latent mixture is that of the member means; this small
        floor keeps its density and the gradients of acquisition functions finite.

    Examples
    --------
    >>> import jax, numpy as np
    >>> X = np.linspace(0, 1, 20)[:, None]; y = np.sin(6 * X[:, 0])
    >>> posterior = DeepEnsemble(num_members=3).fit(X, y, key=jax.random.key(0))
    >>> posterior.predict(X[:4]).mean.shape
    (4,)
    """

    members: MLP | None
    num_members: int = eqx.field(static=True)
    widths: tuple[int, ...] = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    resampling: str = eqx.field(static=True)
    config: TrainConfig = eqx.field(static=True)
    subset_fraction: float = eqx.field(static=True)
    warm_start_steps: int = eqx.field(static=True)
    noise_lower_bound: float = eqx.field(static=True)
    latent_scale: float = eqx.field(static=True)

    def __init__(
        self,
        num_members: int = 5,
        widths=(50, 50),
        activation: str = "tanh",
        resampling: str = "bootstrap",
        *,
        config: TrainConfig | None = None,
        subset_fraction: float = 0.8,
        warm_start_steps: int | None = None,
        noise_lower_bound: float = 1e-4,
        latent_scale: float = 1e-2,
    ):
        self.num_members = check_positive_integer(num_members, "num_members")
        self.widths = check_widths(widths)
        self.activation = check_activation(activation)
        if resampling not in RESAMPLING:
            raise ValueError(f"resampling must be one of {', '.join(RESAMPLING)}; got {resampling!r}.")
        self.resampling = resampling
        config = DEFAULT_CONFIG if config is None else config
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a probnn.nets.TrainConfig, got {type(config).__name__}.")
        if config.validation_fraction != 0.0:
            raise ValueError(
                f"DeepEnsemble trains every member for config.num_steps without early stopping; "
                f"got validation_fraction={config.validation_fraction!r}. Set it to 0."
            )
        self.config = config
        if not (0.0 < subset_fraction <= 1.0):
            raise ValueError(f"subset_fraction must lie in (0, 1], got {subset_fraction!r}.")
        self.subset_fraction = float(subset_fraction)
        if warm_start_steps is None:
            warm_start_steps = max(1, config.num_steps // 4)
        self.warm_start_steps = check_positive_integer(warm_start_steps, "warm_start_steps")
        for name, value in (("noise_lower_bound", noise_lower_bound), ("latent_scale", latent_scale)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be finite and > 0, got {value!r}.")
        self.noise_lower_bound = float(noise_lower_bound)
        self.latent_scale = float(latent_scale)
        self.members = None

    def init_members(self, key, in_features: int) -> MLP:
        """Initialise ``num_members`` networks as one stacked MLP (leading axis: member)."""
        keys = jax.random.split(key, self.num_members)
        return eqx.filter_vmap(
            lambda k: MLP(in_features, self.widths, key=k, activation=self.activation)
        )(keys)

    def fit(self, X, y, *, key, num_restarts: int | None = None) -> "EnsemblePosterior":
        """Train the members on ``(X, y)`` and return the ensemble posterior.

        Parameters
        ----------
        X : array of shape (n, d) or (n,)
        y : array of shape (n,) or (n, 1)
        key : jax.random key
            Draws the initialisations, the row weights and the minibatches.
        num_restarts : int, optional
            ``1`` continues from the previous fit's members for ``warm_start_steps`` steps.
            Without a previous fit, or when the input dimension changed, it trains fresh
            members, as ``None`` and any other value do.

        Returns
        -------
        EnsemblePosterior
        """
        warm = check_fit_arguments(key, num_restarts)
        data, standardizer = prepare_training_data(X, y)
        dim = data.X.shape[1]
        init_key, weight_key, train_key = jax.random.split(key, 3)
        members = self.members
        if warm and members is not None and _input_dim(members) == dim:
            config = dataclasses.replace(self.config, num_steps=self.warm_start_steps)
        else:
            members = self.init_members(init_key, dim)
            config = self.config
        members, weights, noise = _train_program(
            members, data, weight_key, train_key, config, self.resampling, self.subset_fraction, self.noise_lower_bound
        )
        dtype = float_dtype()
        return EnsemblePosterior(
            model=eqx.tree_at(lambda m: m.members, self, members, is_leaf=lambda node: node is None),
            row_weights=weights,
            noise=noise.astype(dtype),
            y_mean=jnp.asarray(standardizer.mean, dtype),
            y_scale=jnp.asarray(standardizer.scale, dtype),
        )


def _input_dim(members: MLP) -> int:
    """Input dimension of a stacked MLP, whose first weight matrix is ``(K, d, width)``."""
    return members.weights[0].shape[-2]


def _row_weights(key, real, n, resampling: str, subset_fraction: float):
    """Training weights of one member: bootstrap counts, a 0/1 subset, or the real rows.

    Shapes stay those of the padded data: the bootstrap draws one index per padded row from
    the real rows and keeps the first ``n`` draws, which gives multinomial counts of ``n``
    draws.
    """
    size = real.shape[0]
    if resampling == "none":
        return real
    if resampling == "bootstrap":
        rows = jax.random.choice(key, size, (size,), p=real / n)
        kept = (jnp.arange(size) < n).astype(real.dtype)
        return jnp.zeros_like(real).at[rows].add(kept)
    priority = jnp.where(real > 0, jax.random.uniform(key, (size,), real.dtype), jnp.inf)
    rank = jnp.argsort(jnp.argsort(priority))
    subset_size = jnp.maximum(jnp.round(subset_fraction * n), 1.0)
    return jnp.where(rank < subset_size, real, 0.0)


@eqx.filter_jit
def _train_program(members, data: NetworkData, weight_key, train_key, config, resampling, subset_fraction, noise_lower_bound):
    num_members = jax.tree.leaves(members)[0].shape[0]
    param_dtype = jax.tree.leaves(members)[0].dtype
    X = data.X.astype(param_dtype)
    y = data.y.astype(param_dtype)
    real = data.weights.astype(param_dtype)

    weight_keys = jax.random.split(weight_key, num_members)
    weights = jax.vmap(lambda k: _row_weights(k, real, data.n, resampling, subset_fraction))(weight_keys)
    train_keys = jax.random.split(train_key, num_members)
    no_validation = jnp.zeros_like(weights)
    train = eqx.filter_vmap(fit_network, in_axes=(eqx.if_array(0), None, None, 0, 0, 0, None))
    # With several devices, each trains an equal share of the members.
    arrays, static = eqx.partition(members, eqx.is_array)
    arrays, weights, no_validation, train_keys = shard_batch((arrays, weights, no_validation, train_keys))
    members = eqx.combine(arrays, static)
    members, _ = train(members, X, y, weights, no_validation, train_keys, config)

    # Out-of-bag residuals: member k on the real rows it gave zero weight.
    predictions = eqx.filter_vmap(lambda member: member(X))(members).astype(data.y.dtype)
    squared = (data.y - predictions) ** 2
    out_of_bag = (weights == 0) & (real > 0)
    num_out_of_bag = jnp.sum(out_of_bag)
    held_out = jnp.sum(jnp.where(out_of_bag, squared, 0.0)) / jnp.maximum(num_out_of_bag, 1)
    in_sample = jnp.sum(weights * squared) / jnp.sum(weights)
    noise = jnp.where(num_out_of_bag > 0, held_out, in_sample)
    return members, weights, jnp.maximum(noise, noise_lower_bound)


class EnsemblePosterior(eqx.Module):
    """Trained ensemble: the members (in ``model.members``), the noise variance and the target scale.

    ``row_weights[k, i]`` is the training weight member ``k`` gave row ``i``: a bootstrap
    count, or 0 or 1 for subsets. Columns past the ``n`` training rows are padding and zero.
    ``noise`` is on the standardised scale. An immutable pytree, so it passes through
    ``jit`` as the acquisition's parameters.
    """

    model: DeepEnsemble
    row_weights: Float[Array, "K N"]
    noise: Float[Array, ""]
    y_mean: Float[Array, ""]
    y_scale: Float[Array, ""]

    @property
    def members(self) -> MLP:
        """The trained networks as one stacked MLP; the leading axis indexes members."""
        return self.model.members

    def member_predictions(self, X_new) -> Float[Array, "K m"]:
        """Evaluate every member at ``X_new`` on the original target scale, shape ``(K, m)``."""
        X_new = check_test_inputs(X_new, _input_dim(self.members))
        outputs = eqx.filter_vmap(lambda member: member(X_new))(self.members)
        return outputs.astype(self.y_mean.dtype) * self.y_scale + self.y_mean

    def predict(self, X_new, latent: bool = False) -> dist.MixtureSameFamily:
        """Return the equal-weight mixture of the members' Normals at ``X_new``, batch shape ``(m,)``.

        Component ``k`` is ``Normal(f_k(x), sigma)`` with the out-of-bag noise standard
        deviation, or with ``latent=True`` the floor ``latent_scale`` times the target
        standard deviation.
        """
        means = self.member_predictions(X_new).T
        if latent:
            scale = self.model.latent_scale * self.y_scale
        else:
            scale = jnp.sqrt(self.noise) * self.y_scale
        probs = jnp.full(means.shape, 1.0 / means.shape[1], means.dtype)
        components = dist.Normal(means, jnp.broadcast_to(scale, means.shape))
        return dist.MixtureSameFamily(dist.Categorical(probs=probs), components)

    def sample_functions(self, key, X_new, num_samples: int) -> Float[Array, "s m"]:
        """Draw ``num_samples`` functions at ``X_new``: each is one member chosen uniformly at random."""
        predictions = self.member_predictions(X_new)
        chosen = jax.random.randint(key, (num_samples,), 0, predictions.shape[0])
        return predictions[chosen]
