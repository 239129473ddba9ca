r"""Training objectives of the neural processes, on padded task batches.

CNP and CANP minimise the negative log-likelihood per target point,

.. math::

    \mathcal{L}_{\text{ll}} = -\frac{1}{|T|}\sum_{t \in T} \log \mathcal{N}(y_t \mid \mu(x_t; C), \sigma^2(x_t; C)),

for context :math:`C` and targets :math:`T`. MPNP adds to this "amortisation" term a
marginal term over :math:`K` pseudo context sets :math:`Z'_k \sim g(\cdot \mid C)` and a
weighted term that scores the pseudo points under the predictive given the real context
(Lee, Yun, Nam, Fong and Lee, ICLR 2023),

.. math::

    \mathcal{L}_{\text{marg}} &= -\frac{1}{|T|}\log \frac1K \sum_{k=1}^K
        \exp\Big(\sum_{t \in T} \log p(y_t \mid x_t, C \cup Z'_k)\Big), \\
    \mathcal{L}_{\text{pseudo}} &= -\frac{1}{P}\log \frac1K \sum_{k=1}^K
        \exp\Big(\sum_{(x', y') \in Z'_k} \log p(y' \mid x', C)\Big), \\
    \mathcal{L}_{\text{MPNP}} &= \mathcal{L}_{\text{marg}} + \mathcal{L}_{\text{ll}}
        + \lambda\,\mathcal{L}_{\text{pseudo}},

with :math:`P` points per pseudo set. Each term is averaged over the tasks of a batch.

NOTE: :math:`\mathcal{L}_{\text{pseudo}}` follows the description "likelihood of the
pseudo data given the real context", and was not checked against the paper's equations.
Another reading scores the real targets given pseudo set :math:`k` alone.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from probnn.np.models import MPNP, gaussian_log_prob
from probnn.priors.np_tasks import NPTaskBatch

__all__ = ["mpnp_task_terms", "np_loss"]


def _log_mean_exp(values, axis=0):
    return logsumexp(values, axis=axis) - math.log(values.shape[axis])


def mpnp_task_terms(model: MPNP, key, x, y, ctx_mask, tgt_mask) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Return the marginal, log-likelihood and pseudo terms of the MPNP loss for one task.

    ``x (L, 1)``, ``y (L,)`` and the masks ``(L,)`` describe a padded task; the targets
    are queried at all ``L`` inputs and weighted by ``tgt_mask``.
    """
    num_targets = jnp.maximum(jnp.sum(tgt_mask), 1)
    weights = tgt_mask.astype(y.dtype)
    pseudo_x, pseudo_y = model.pseudo_contexts(key, x, y, ctx_mask)

    # Given the real context alone: the targets and every pseudo point, in one pass.
    queries = jnp.concatenate([x, pseudo_x.reshape(-1, 1)])
    mean, sd = model.backbone(x, y, ctx_mask, queries)
    num_points = x.shape[0]
    target_ll = gaussian_log_prob(y, mean[:num_points], sd[:num_points])
    likelihood = -jnp.sum(weights * target_ll) / num_targets
    pseudo_ll = gaussian_log_prob(pseudo_y.reshape(-1), mean[num_points:], sd[num_points:])
    pseudo_ll = pseudo_ll.reshape(pseudo_y.shape).sum(axis=-1)
    pseudo = -_log_mean_exp(pseudo_ll) / model.pseudo_size

    # Given the context joined with each pseudo set.
    means, sds = model.predict_with_pseudo(x, y, ctx_mask, pseudo_x, pseudo_y, x)
    set_ll = jnp.sum(weights * gaussian_log_prob(y, means, sds), axis=-1)
    marginal = -_log_mean_exp(set_ll) / num_targets
    return marginal, likelihood, pseudo


def np_loss(model, batch: NPTaskBatch, key, pseudo_weight: float = 0.1) -> tuple[jax.Array, dict]:
    """Training loss of ``model`` on ``batch`` and its terms, averaged over the tasks.

    ``key`` draws the MPNP pseudo contexts and ``pseudo_weight`` is its :math:`\\lambda`;
    both are unused for CNP and CANP. Returns ``(loss, terms)`` with ``terms`` a dict of
    scalars (``"likelihood"``, and for MPNP also ``"marginal"`` and ``"pseudo"``).
    """
    y = batch.y
    if isinstance(model, MPNP):
        keys = jax.random.split(key, y.shape[0])
        marginal, likelihood, pseudo = jax.vmap(mpnp_task_terms, in_axes=(None, 0, 0, 0, 0, 0))(
            model, keys, batch.x, y, batch.context_mask, batch.target_mask
        )
        terms = {"marginal": jnp.mean(marginal), "likelihood": jnp.mean(likelihood), "pseudo": jnp.mean(pseudo)}
        return terms["marginal"] + terms["likelihood"] + pseudo_weight * terms["pseudo"], terms

    mean, sd = jax.vmap(model)(batch.x, y, batch.context_mask, batch.x)
    weights = batch.target_mask.astype(y.dtype)
    per_task = -jnp.sum(weights * gaussian_log_prob(y, mean, sd), axis=-1) / jnp.maximum(jnp.sum(weights, -1), 1)
    likelihood = jnp.mean(per_task)
    return likelihood, {"likelihood": likelihood}
