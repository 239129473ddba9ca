r"""Conditional, attentive and martingale posterior neural processes (equinox modules).

Every model maps a context set and target inputs of one task to Gaussian predictives at the
targets, with fixed padded shapes: ``x_ctx (N, 1)``, ``y_ctx (N,)``, ``ctx_mask (N,)``
(True at real context points) and ``x_tgt (M, 1)``. Padded context points are zeroed on
entry and excluded from every pooling and attention, so they cannot change a prediction.
Each model has a learned null token that replaces the context when it is empty. The
token is the pooled representation of an empty set and a key/value pair that every
attention layer may attend to, so no softmax is taken over an empty set.

The predictive standard deviation is :math:`0.1 + 0.9\,\mathrm{softplus}(\cdot)`, as in
the conditional neural process benchmarks of Le et al. (2018) and Lee et al. (2020).

* :class:`CNP` (Garnelo et al., 2018): :math:`r = \frac{1}{N_c}\sum_i h(x_i, y_i)`,
  :math:`(\mu, \sigma)(x) = g(r, x)`.
* :class:`CANP`: a deterministic attentive neural process (Kim et al., 2019, without the
  latent path): self-attention over the context pairs, cross-attention from each target
  input to the context inputs, concatenated with a mean-pooled path.
* :class:`MPNP`: the martingale posterior neural process of Lee, Yun, Nam, Fong and Lee
  (ICLR 2023) on the :class:`CANP` backbone. A generator draws ``K`` exchangeable pseudo
  context sets given the context, and the predictive is the equal-weight mixture over
  ``k`` of the backbone's Gaussian given the context joined with pseudo set ``k``.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

__all__ = [
    "CANP",
    "CNP",
    "MODEL_NAMES",
    "MPNP",
    "NPConfig",
    "PseudoContextGenerator",
    "build_model",
    "gaussian_log_prob",
    "gaussian_output",
]

MODEL_NAMES = ("cnp", "canp", "mpnp")

#: Pseudo inputs are uniform on ``[-PSEUDO_X_BOUND, PSEUDO_X_BOUND]``, the tasks' input domain.
PSEUDO_X_BOUND = 2.0


@dataclasses.dataclass(frozen=True)
class NPConfig:
    """Architecture of a neural process.

    Attributes
    ----------
    model : {"cnp", "canp", "mpnp"}
    hidden : int
        Width of every representation and hidden layer.
    encoder_depth, decoder_depth : int
        Linear layers of the pair encoder and of the decoder MLPs.
    self_attention_layers : int
        Self-attention blocks over the context (CANP and MPNP).
    num_heads : int
        Attention heads; must divide ``hidden``.
    num_pseudo_sets : int
        ``K``, pseudo context sets per prediction (MPNP only).
    pseudo_size : int
        Points per pseudo context set (MPNP only).
    """

    model: str = "canp"
    hidden: int = 128
    encoder_depth: int = 3
    decoder_depth: int = 3
    self_attention_layers: int = 2
    num_heads: int = 8
    num_pseudo_sets: int = 5
    pseudo_size: int = 10

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(f"NPConfig.model must be one of {', '.join(MODEL_NAMES)}; got {self.model!r}.")
        for name in ("hidden", "encoder_depth", "decoder_depth", "num_heads", "num_pseudo_sets", "pseudo_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NPConfig.{name} must be a positive integer, got {value!r}.")
        layers = self.self_attention_layers
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 0:
            raise ValueError(f"NPConfig.self_attention_layers must be an integer >= 0, got {layers!r}.")
        if self.hidden % self.num_heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of num_heads ({self.num_heads}).")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "NPConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown NPConfig entries {unknown}; expected a subset of {sorted(known)}.")
        return cls(**values)


def gaussian_output(raw: Float[Array, "M 2"]) -> tuple[Array, Array]:
    """Split decoder outputs into the mean and the standard deviation ``0.1 + 0.9 softplus``."""
    return raw[..., 0], 0.1 + 0.9 * jax.nn.softplus(raw[..., 1])


def _mlp(in_size: int, out_size: int, hidden: int, depth: int, key) -> eqx.nn.MLP:
    # equinox counts hidden layers, so ``depth`` linear layers means depth - 1 of them.
    return eqx.nn.MLP(in_size, out_size, hidden, depth - 1, activation=jax.nn.relu, key=key)


def _clean_context(x_ctx, y_ctx, ctx_mask):
    """Zero the padded points, so that not even a NaN in the padding reaches the arithmetic."""
    x_ctx = jnp.where(ctx_mask[:, None], x_ctx, 0.0)
    y_ctx = jnp.where(ctx_mask, y_ctx, 0.0)
    return x_ctx, y_ctx


def _pairs(x_ctx, y_ctx):
    return jnp.concatenate([x_ctx, y_ctx[:, None]], axis=-1)


def _masked_mean(values: Float[Array, "N d"], mask: Bool[Array, " N"], empty: Float[Array, " d"]) -> Array:
    """Mean of the rows where ``mask`` is True, or ``empty`` when there are none."""
    count = jnp.sum(mask)
    total = jnp.sum(jnp.where(mask[:, None], values, 0.0), axis=0)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), empty)


def _with_null(null: Float[Array, " d"], values: Float[Array, "N d"], mask: Bool[Array, " N"]):
    """Prepend the null token to a key/value set and its mask; the null token is always visible."""
    return jnp.concatenate([null[None], values]), jnp.concatenate([jnp.ones((1,), bool), mask])


class AttentionBlock(eqx.Module):
    """Multihead attention block of the set transformer (Lee et al., 2019).

    ``H = LayerNorm(Q + Attention(Q, K, K))`` and ``output = LayerNorm(H + FF(H))``.
    """

    attention: eqx.nn.MultiheadAttention
    feedforward: eqx.nn.MLP
    norm_attention: eqx.nn.LayerNorm
    norm_feedforward: eqx.nn.LayerNorm

    def __init__(self, hidden: int, num_heads: int, key):
        key_a, key_f = jax.random.split(key)
        self.attention = eqx.nn.MultiheadAttention(num_heads, hidden, key=key_a)
        self.feedforward = _mlp(hidden, hidden, hidden, 2, key_f)
        self.norm_attention = eqx.nn.LayerNorm(hidden)
        self.norm_feedforward = eqx.nn.LayerNorm(hidden)

    def __call__(self, queries: Float[Array, "q d"], keys: Float[Array, "k d"], key_mask: Bool[Array, " k"] | None):
        if key_mask is None:
            key_mask = jnp.ones(keys.shape[0], bool)
        mask = jnp.broadcast_to(key_mask[None, :], (queries.shape[0], keys.shape[0]))
        h = jax.vmap(self.norm_attention)(queries + self.attention(queries, keys, keys, mask=mask))
        return jax.vmap(self.norm_feedforward)(h + jax.vmap(self.feedforward)(h))


class CNP(eqx.Module):
    """Conditional neural process: a mean-pooled encoder and an MLP decoder."""

    encoder: eqx.nn.MLP
    decoder: eqx.nn.MLP
    null: Float[Array, " d"]

    def __init__(self, config: NPConfig, key):
        key_e, key_d, key_n = jax.random.split(key, 3)
        self.encoder = _mlp(2, config.hidden, config.hidden, config.encoder_depth, key_e)
        self.decoder = _mlp(config.hidden + 1, 2, config.hidden, config.decoder_depth, key_d)
        self.null = 0.1 * jax.random.normal(key_n, (config.hidden,))

    def __call__(self, x_ctx, y_ctx, ctx_mask, x_tgt) -> tuple[Float[Array, " M"], Float[Array, " M"]]:
        """Predictive mean and standard deviation ``(M,)`` at ``x_tgt``."""
        x_ctx, y_ctx = _clean_context(x_ctx, y_ctx, ctx_mask)
        h = jax.vmap(self.encoder)(_pairs(x_ctx, y_ctx))
        r = _masked_mean(h, ctx_mask, self.null)
        inputs = jnp.concatenate([jnp.broadcast_to(r, (x_tgt.shape[0], r.shape[0])), x_tgt], axis=-1)
        return gaussian_output(jax.vmap(self.decoder)(inputs))


class CANP(eqx.Module):
    """Conditional attentive neural process: self- and cross-attention plus a pooled path."""

    value_encoder: eqx.nn.MLP
    self_attention: list[AttentionBlock]
    input_encoder: eqx.nn.MLP
    cross_attention: eqx.nn.MultiheadAttention
    pool_encoder: eqx.nn.MLP
    decoder: eqx.nn.MLP
    null_key: Float[Array, " d"]
    null_value: Float[Array, " d"]
    null_pool: Float[Array, " d"]

    def __init__(self, config: NPConfig, key):
        keys = jax.random.split(key, 8 + config.self_attention_layers)
        hidden = config.hidden
        self.value_encoder = _mlp(2, hidden, hidden, config.encoder_depth, keys[0])
        self.self_attention = [
            AttentionBlock(hidden, config.num_heads, k) for k in keys[8 : 8 + config.self_attention_layers]
        ]
        self.input_encoder = _mlp(1, hidden, hidden, 2, keys[1])
        self.cross_attention = eqx.nn.MultiheadAttention(config.num_heads, hidden, key=keys[2])
        self.pool_encoder = _mlp(2, hidden, hidden, config.encoder_depth, keys[3])
        self.decoder = _mlp(2 * hidden + 1, 2, hidden, config.decoder_depth, keys[4])
        self.null_key = 0.1 * jax.random.normal(keys[5], (hidden,))
        self.null_value = 0.1 * jax.random.normal(keys[6], (hidden,))
        self.null_pool = 0.1 * jax.random.normal(keys[7], (hidden,))

    def __call__(self, x_ctx, y_ctx, ctx_mask, x_tgt) -> tuple[Float[Array, " M"], Float[Array, " M"]]:
        """Predictive mean and standard deviation ``(M,)`` at ``x_tgt``."""
        x_ctx, y_ctx = _clean_context(x_ctx, y_ctx, ctx_mask)
        pairs = _pairs(x_ctx, y_ctx)

        # Values: each context pair attends to the others (and the null token).
        values = jax.vmap(self.value_encoder)(pairs)
        # A zero-length context has no queries; equinox attention needs at least one.
        blocks = self.self_attention if x_ctx.shape[0] > 0 else []
        for block in blocks:
            keys, key_mask = _with_null(self.null_value, values, ctx_mask)
            values = block(values, keys, key_mask)

        # Cross-attention: target inputs query the context inputs.
        queries = jax.vmap(self.input_encoder)(x_tgt)
        keys, key_mask = _with_null(self.null_key, jax.vmap(self.input_encoder)(x_ctx), ctx_mask)
        values, _ = _with_null(self.null_value, values, ctx_mask)
        mask = jnp.broadcast_to(key_mask[None, :], (queries.shape[0], keys.shape[0]))
        attended = self.cross_attention(queries, keys, values, mask=mask)

        pooled = _masked_mean(jax.vmap(self.pool_encoder)(pairs), ctx_mask, self.null_pool)
        pooled = jnp.broadcast_to(pooled, (x_tgt.shape[0], pooled.shape[0]))
        return gaussian_output(jax.vmap(self.decoder)(jnp.concatenate([attended, pooled, x_tgt], axis=-1)))


class PseudoContextGenerator(eqx.Module):
    r"""Generator of the outputs of one pseudo context set, given its inputs and the context.

    An induced set attention block whose inducing points are the context representations
    :math:`R` (with the null token). Each pseudo point enters as the row
    :math:`e_j = arepsilon_j + u(x'_j)`: i.i.d. standard normal noise plus an encoding
    of its input. The block computes :math:`H = \mathrm{MAB}(R, E)` and
    :math:`\mathrm{MAB}(E, H)`, and a linear head maps each row to a pseudo output
    :math:`y'_j`. The map is permutation equivariant in the rows of :math:`E` and invariant
    to the order of the context, so for i.i.d. pseudo inputs the pseudo points are
    exchangeable given the context.
    """

    encoder: eqx.nn.MLP
    input_encoder: eqx.nn.MLP
    induce: AttentionBlock
    read_out: AttentionBlock
    head: eqx.nn.Linear
    null: Float[Array, " d"]

    def __init__(self, config: NPConfig, key):
        key_e, key_u, key_i, key_r, key_h, key_n = jax.random.split(key, 6)
        self.encoder = _mlp(2, config.hidden, config.hidden, config.encoder_depth, key_e)
        self.input_encoder = _mlp(1, config.hidden, config.hidden, 2, key_u)
        self.induce = AttentionBlock(config.hidden, config.num_heads, key_i)
        self.read_out = AttentionBlock(config.hidden, config.num_heads, key_r)
        self.head = eqx.nn.Linear(config.hidden, 1, key=key_h)
        self.null = 0.1 * jax.random.normal(key_n, (config.hidden,))

    def __call__(self, noise: Float[Array, "P d"], x_pseudo: Float[Array, "P 1"], x_ctx, y_ctx, ctx_mask) -> Array:
        """Pseudo outputs ``(P,)`` at the pseudo inputs ``(P, 1)``, for noise rows ``(P, hidden)``."""
        x_ctx, y_ctx = _clean_context(x_ctx, y_ctx, ctx_mask)
        representations, mask = _with_null(self.null, jax.vmap(self.encoder)(_pairs(x_ctx, y_ctx)), ctx_mask)
        rows = noise + jax.vmap(self.input_encoder)(x_pseudo.astype(noise.dtype))
        induced = self.induce(representations, rows, None)
        return jax.vmap(self.head)(self.read_out(rows, induced, mask))[:, 0]


class MPNP(eqx.Module):
    """Martingale posterior neural process: a :class:`CANP` and a pseudo context generator."""

    backbone: CANP
    generator: PseudoContextGenerator
    num_pseudo_sets: int = eqx.field(static=True)
    pseudo_size: int = eqx.field(static=True)

    def __init__(self, config: NPConfig, key):
        key_b, key_g = jax.random.split(key)
        self.backbone = CANP(config, key_b)
        self.generator = PseudoContextGenerator(config, key_g)
        self.num_pseudo_sets = config.num_pseudo_sets
        self.pseudo_size = config.pseudo_size

    def pseudo_contexts(
        self, key, x_ctx, y_ctx, ctx_mask, num_sets: int | None = None
    ) -> tuple[Float[Array, "K P 1"], Float[Array, "K P"]]:
        """Draw ``num_sets`` (default ``K``) pseudo context sets of ``pseudo_size`` points given the context.

        Pseudo inputs are i.i.d. uniform on ``[-PSEUDO_X_BOUND, PSEUDO_X_BOUND]``, the input
        distribution of the task families, and the generator draws the outputs. The sets
        are i.i.d. given the context, so any number of them can be drawn from a model
        trained with ``K``.
        """
        hidden = self.backbone.null_key.shape[0]
        dtype = self.backbone.null_key.dtype
        num_sets = self.num_pseudo_sets if num_sets is None else num_sets
        key_x, key_noise = jax.random.split(key)
        pseudo_x = jax.random.uniform(
            key_x, (num_sets, self.pseudo_size, 1), dtype, minval=-PSEUDO_X_BOUND, maxval=PSEUDO_X_BOUND
        )
        noise = jax.random.normal(key_noise, (num_sets, self.pseudo_size, hidden), dtype)
        pseudo_y = jax.vmap(self.generator, in_axes=(0, 0, None, None, None))(noise, pseudo_x, x_ctx, y_ctx, ctx_mask)
        return pseudo_x, pseudo_y

    def predict_with_pseudo(self, x_ctx, y_ctx, ctx_mask, pseudo_x, pseudo_y, x_tgt) -> tuple[Array, Array]:
        """Means and standard deviations ``(K, M)`` given the context joined with each pseudo set.

        With an empty context the pseudo sets are masked out, so every component is the
        backbone's prediction given no data: the generator was trained on contexts of at
        least ``min_context`` points and its draws given nothing are not data-like.
        """
        use_pseudo = jnp.any(ctx_mask)

        def one(px, py):
            x = jnp.concatenate([x_ctx, px.astype(x_ctx.dtype)])
            y = jnp.concatenate([y_ctx, py.astype(y_ctx.dtype)])
            mask = jnp.concatenate([ctx_mask, jnp.full(py.shape, use_pseudo)])
            return self.backbone(x, y, mask, x_tgt)

        return jax.vmap(one)(pseudo_x, pseudo_y)

    def __call__(self, x_ctx, y_ctx, ctx_mask, x_tgt, *, key) -> tuple[Float[Array, "K M"], Float[Array, "K M"]]:
        """Mixture components ``(K, M)``: means and standard deviations, one row per pseudo set."""
        pseudo_x, pseudo_y = self.pseudo_contexts(key, x_ctx, y_ctx, ctx_mask)
        return self.predict_with_pseudo(x_ctx, y_ctx, ctx_mask, pseudo_x, pseudo_y, x_tgt)


def build_model(config: NPConfig, key) -> CNP | CANP | MPNP:
    """Build the model ``config.model`` with float32 parameters, whatever the global precision."""
    with jax.enable_x64(False):
        if config.model == "cnp":
            return CNP(config, key)
        if config.model == "canp":
            return CANP(config, key)
        return MPNP(config, key)


def gaussian_log_prob(y, mean, sd):
    """Log density of ``N(mean, sd^2)`` at ``y``, elementwise."""
    return -0.5 * ((y - mean) / sd) ** 2 - jnp.log(sd) - 0.5 * math.log(2.0 * math.pi)
