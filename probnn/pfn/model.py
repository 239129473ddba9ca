r"""The prior-fitted transformer.

A dataset of ``n`` training points and ``m`` queries becomes a set of ``n + m`` tokens
without positional encodings, so the prediction does not depend on the order of the
points. A training token is the sum of linear encodings of its input and its target, a
query token encodes its input alone. In every layer training tokens attend to training
tokens and queries attend to training tokens only, so queries never see each other and
each query's prediction is the posterior predictive given the training set alone. The
last layer's query tokens are mapped to the logits of a :class:`~probnn.pfn.BarDistribution`.

Inputs have ``max_features`` columns. A dataset with ``d < max_features`` features is
zero-padded and its used columns are multiplied by :math:`\sqrt{\text{max\_features}/d}`,
so the squared norm of an input does not depend on ``d``.

Reference: S. Mueller, N. Hollmann, S. Pineda Arango, J. Grabocka and F. Hutter,
"Transformers Can Do Bayesian Inference", ICLR 2022.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["PFNConfig", "PFNTransformer", "encode_inputs", "standardize_targets"]


@dataclasses.dataclass(frozen=True)
class PFNConfig:
    """Sizes of a PFN and the limits of the prior it is trained for.

    Attributes
    ----------
    max_features : int
        Most input features a dataset may have.
    max_train_points : int
        Most training points the network was trained to condition on.
    d_model, num_layers, num_heads, d_ff : int
        Transformer width, depth, attention heads and feed-forward width.
    num_buckets : int
        Buckets of the bar distribution.
    normalize_y : bool
        Standardise targets by the training points' mean and standard deviation before
        encoding them, and map the prediction back. Needed when the prior's output
        scale varies; off for a prior with one known scale.
    """

    max_features: int = 1
    max_train_points: int = 50
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    d_ff: int = 256
    num_buckets: int = 1000
    normalize_y: bool = False

    def __post_init__(self):
        for name in ("max_features", "max_train_points", "d_model", "num_layers", "num_heads", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PFNConfig.{name} must be a positive integer, got {value!r}.")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be a multiple of num_heads ({self.num_heads})."
            )
        if isinstance(self.num_buckets, bool) or not isinstance(self.num_buckets, int) or self.num_buckets < 3:
            raise ValueError(f"PFNConfig.num_buckets must be an integer >= 3, got {self.num_buckets!r}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "PFNConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown PFNConfig entries {unknown}; expected a subset of {sorted(known)}.")
        return cls(**values)


def encode_inputs(x: Float[Array, "n D"], num_features) -> Float[Array, "n D"]:
    """Centre inputs from the unit cube, zero the unused columns and rescale the used ones."""
    max_features = x.shape[-1]
    used = jnp.arange(max_features) < num_features
    scale = jnp.sqrt(max_features / jnp.maximum(num_features, 1).astype(x.dtype))
    return jnp.where(used, (x - 0.5) * scale, 0.0)


def standardize_targets(y: Float[Array, " n"], train_mask) -> tuple[Array, Array]:
    """Mean and standard deviation of the training targets.

    With fewer than two training points the standard deviation is 1, and without any the
    mean is 0. A floor of 1e-6 relative to the mean's size keeps constant data finite.
    """
    weight = train_mask.astype(y.dtype)
    count = jnp.sum(weight)
    mean = jnp.sum(weight * y) / jnp.maximum(count, 1.0)
    variance = jnp.sum(weight * (y - mean) ** 2) / jnp.maximum(count - 1.0, 1.0)
    std = jnp.where(count >= 2, jnp.sqrt(variance), 1.0)
    std = jnp.maximum(std, 1e-6 * jnp.maximum(jnp.abs(mean), 1.0))
    return mean, std


class _Layer(eqx.Module):
    """Pre-norm transformer layer with masked multi-head attention and a GELU MLP."""

    norm_attention: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear
    out: eqx.nn.Linear
    norm_mlp: eqx.nn.LayerNorm
    hidden: eqx.nn.Linear
    readout: eqx.nn.Linear
    num_heads: int = eqx.field(static=True)

    def __init__(self, config: PFNConfig, key):
        keys = jax.random.split(key, 4)
        d = config.d_model
        self.norm_attention = eqx.nn.LayerNorm(d)
        self.qkv = eqx.nn.Linear(d, 3 * d, key=keys[0])
        self.out = eqx.nn.Linear(d, d, key=keys[1])
        self.norm_mlp = eqx.nn.LayerNorm(d)
        self.hidden = eqx.nn.Linear(d, config.d_ff, key=keys[2])
        self.readout = eqx.nn.Linear(config.d_ff, d, key=keys[3])
        self.num_heads = config.num_heads

    def __call__(self, tokens: Float[Array, "L d"], key_mask) -> Float[Array, "L d"]:
        length, d = tokens.shape
        head = d // self.num_heads

        h = jax.vmap(self.norm_attention)(tokens)
        q, k, v = jnp.split(jax.vmap(self.qkv)(h).reshape(length, 3, self.num_heads, head), 3, axis=1)
        scores = jnp.einsum("qhd,khd->hqk", q[:, 0], k[:, 0]) / math.sqrt(head)
        scores = jnp.where(key_mask[None, None, :], scores, -jnp.inf)
        weights = jax.nn.softmax(scores, axis=-1)
        attended = jnp.einsum("hqk,khd->qhd", weights, v[:, 0]).reshape(length, d)
        tokens = tokens + jax.vmap(self.out)(attended)

        h = jax.vmap(self.norm_mlp)(tokens)
        h = jax.vmap(self.readout)(jax.nn.gelu(jax.vmap(self.hidden)(h)))
        return tokens + h


class PFNTransformer(eqx.Module):
    """The network of a PFN: encoders, transformer layers, and the bucket head.

    Call it on one dataset; :func:`jax.vmap` it over a batch.
    """

    x_encoder: eqx.nn.Linear
    y_encoder: eqx.nn.Linear
    layers: list
    null_token: Float[Array, " d"]
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, config: PFNConfig, key):
        keys = jax.random.split(key, config.num_layers + 4)
        self.x_encoder = eqx.nn.Linear(config.max_features, config.d_model, key=keys[0])
        self.y_encoder = eqx.nn.Linear(1, config.d_model, key=keys[1])
        self.null_token = 0.02 * jax.random.normal(keys[3], (config.d_model,))
        self.layers = [_Layer(config, k) for k in keys[4:]]
        self.norm = eqx.nn.LayerNorm(config.d_model)
        self.head = eqx.nn.Linear(config.d_model, config.num_buckets, key=keys[2])

    def __call__(
        self,
        x: Float[Array, "L D"],
        y: Float[Array, " L"],
        train_mask,
        num_features,
    ) -> Float[Array, "L K"]:
        """Bucket logits for every token.

        Parameters
        ----------
        x : array of shape (L, max_features)
            Inputs in the unit cube.
        y : array of shape (L,)
            Targets, ignored where ``train_mask`` is false.
        train_mask : bool array of shape (L,)
            The training points: the keys every token attends to.
        num_features : int
            Number of used input columns.

        Returns
        -------
        (L, num_buckets) logits; the rows of query tokens are the predictions.
        """
        encoded = encode_inputs(x, num_features)
        tokens = jax.vmap(self.x_encoder)(encoded)
        y_tokens = jax.vmap(self.y_encoder)(jnp.where(train_mask, y, 0.0)[:, None])
        tokens = tokens + jnp.where(train_mask[:, None], y_tokens, 0.0)
        # A learned token that every token may attend to, so a dataset without training
        # points still has a key, and queries still never attend to each other.
        tokens = jnp.concatenate([self.null_token[None, :].astype(tokens.dtype), tokens])
        key_mask = jnp.concatenate([jnp.ones((1,), bool), train_mask])
        for layer in self.layers:
            tokens = layer(tokens, key_mask)
        return jax.vmap(self.head)(jax.vmap(self.norm)(tokens[1:]))


def count_parameters(model: eqx.Module) -> int:
    """Number of trainable scalars in ``model``."""
    return sum(leaf.size for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))
