"""A PFN as a model with probnn's fit/predict interface, for Bayesian optimization and fitting.

Fitting a PFN is storing the data: the posterior predictive comes from one forward pass of
the transformer at prediction time. Inputs must lie in the unit cube, the domain of the
task priors (the BO loop maps its box there); targets are standardised by default.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from probnn.pfn.bar import BarDistribution
from probnn.pfn.network import PriorFittedNetwork, load_pfn, predict_logits

__all__ = ["PFNModel", "PFNPosterior"]


class PFNModel(eqx.Module):
    """A prior-fitted network used as a regression model.

    Parameters
    ----------
    pfn : PriorFittedNetwork or str
        A loaded network, or a shipped checkpoint name / folder for :func:`load_pfn`.
    standardize : bool
        Standardise the targets by their mean and standard deviation before conditioning
        and map the predictive back, as the BO loop does for every surrogate. Right for
        priors whose output scale is itself uncertain (``gp-hyper``); turn it off for a
        prior with one known scale (``gp-rbf-1d``).

    Examples
    --------
    >>> model = PFNModel("gp-hyper")  # doctest: +SKIP
    >>> posterior = model.fit(X, y)  # doctest: +SKIP
    >>> posterior.predict(X_new).mean  # doctest: +SKIP
    """

    pfn: PriorFittedNetwork
    standardize: bool = eqx.field(static=True)

    def __init__(self, pfn: PriorFittedNetwork | str = "gp-hyper", standardize: bool = True):
        self.pfn = pfn if isinstance(pfn, PriorFittedNetwork) else load_pfn(pfn)
        self.standardize = bool(standardize)

    @property
    def max_train_points(self) -> int:
        return self.pfn.config.max_train_points

    def fit(self, X: ArrayLike, y: ArrayLike, *, key=None, num_restarts=None) -> "PFNPosterior":
        """Condition on ``(X, y)``: checks the data against the network's limits and stores it.

        ``key`` and ``num_restarts`` are accepted for the common model interface; a PFN
        has no hyperparameters to fit.
        """
        del key, num_restarts
        X, y, _ = self.pfn.check_data(X, y, None)
        if X.size and (X.min() < -1e-9 or X.max() > 1 + 1e-9):
            raise ValueError(
                f"PFN inputs must lie in the unit cube (the task prior's domain); got values in "
                f"[{X.min():.3g}, {X.max():.3g}]. Scale them with the known bounds first."
            )
        loc, scale = 0.0, 1.0
        if self.standardize and y.size:
            loc = float(np.mean(y))
            scale = float(np.std(y)) if y.size > 1 and np.std(y) > 0 else 1.0
        # Padding to the network's limit gives every fit the same shapes, so a BO loop
        # compiles its acquisition search once rather than once per evaluation count.
        limit = self.pfn.config.max_train_points
        X_pad = np.zeros((limit, X.shape[1]))
        y_pad = np.zeros(limit)
        X_pad[: len(y)] = X
        y_pad[: len(y)] = (y - loc) / scale
        dtype = self.pfn.borders.dtype
        return PFNPosterior(
            self.pfn, jnp.asarray(X_pad, dtype), jnp.asarray(y_pad, dtype), jnp.asarray(len(y)), loc, scale,
            self.standardize,
        )


class PFNPosterior(eqx.Module):
    """The conditioned PFN: the network plus the standardised training data, padded to its limit."""

    pfn: PriorFittedNetwork
    X_padded: Float[Array, "N d"]
    y_padded: Float[Array, " N"]
    num_train: Array
    y_loc: float = eqx.field(static=True, default=0.0)
    y_scale: float = eqx.field(static=True, default=1.0)
    standardize: bool = eqx.field(static=True, default=True)

    @property
    def model(self) -> PFNModel:
        return PFNModel(self.pfn, self.standardize)

    def predict(self, X_new: ArrayLike, latent: bool = False) -> BarDistribution:
        """Posterior predictive at ``X_new`` (``(m, d)`` in the unit cube), batch shape ``(m,)``.

        A network predicts one of two things, fixed by its training
        (:attr:`PriorFittedNetwork.predicts_latent`): noisy targets (``gp-rbf-1d``,
        ``gp-hyper``) or the noise-free function (``gp-hyper-bo``). ``latent`` does not
        change the result. The BO loop requests the function, so it uses ``gp-hyper-bo``,
        whose spread shrinks at the observed inputs.
        """
        del latent
        X_new = jnp.asarray(X_new)
        if X_new.ndim == 1:
            X_new = X_new[:, None]
        if X_new.ndim != 2 or X_new.shape[1] != self.X_padded.shape[1]:
            raise ValueError(f"X_new must have shape (m, {self.X_padded.shape[1]}), got {tuple(X_new.shape)}.")
        X_new = X_new.astype(self.X_padded.dtype)
        logits, loc, scale = predict_logits(self.pfn, self.X_padded, self.y_padded, X_new, self.num_train)
        # The network's own standardisation (if any), then the model's.
        return BarDistribution(self.pfn.borders, logits).affine(self.y_loc + self.y_scale * loc, self.y_scale * scale)

    @property
    def X_train(self) -> Array:
        """The training inputs, without the padding."""
        return self.X_padded[: int(self.num_train)]

    def sample_functions(self, key, X_new, num_samples: int):
        """Not available: a PFN predicts marginals only, not joint function draws."""
        raise NotImplementedError(
            "A PFN predicts each point's marginal distribution, not joint function samples, so Thompson "
            "sampling is not available; use the acquisition logei, ucb or pi."
        )

