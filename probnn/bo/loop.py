"""The ask/tell Bayesian optimization loop (minimisation)."""

from __future__ import annotations

import logging
import math
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from probnn.bo.acquisition import ACQUISITIONS
from probnn.bo.journal import Journal
from probnn.bo.optimize import optimize_acquisition, sobol_points
from probnn.bo.surrogates import MARGINAL_ONLY, SURROGATES, make_surrogate

logger = logging.getLogger(__name__)

#: Points closer than this (max-norm on the unit cube) count as the same input.
REPEAT_TOLERANCE = 1e-6

#: Every this many fits the hyperparameters are refitted from random restarts too. In
#: between, only the previous optimum is refined: one new point barely moves it, so a few
#: L-BFGS steps suffice.
FULL_REFIT_EVERY = 5

#: Acquisition names accepted by the loop; "ts" is Thompson sampling.
ACQUISITION_NAMES = tuple(ACQUISITIONS) + ("ts",)


class _AcquisitionParams(eqx.Module):
    posterior: eqx.Module
    best: jax.Array
    beta: jax.Array
    kind: str = eqx.field(static=True)


def _acquisition_values(params: _AcquisitionParams, X_unit):
    predictive = params.posterior.predict(X_unit, latent=True)
    return ACQUISITIONS[params.kind](predictive, params.best, params.beta)


def _iteration_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def check_bounds(bounds) -> np.ndarray:
    """Return ``bounds`` as a float ``(d, 2)`` array of finite lower < upper pairs."""
    array = np.asarray(bounds, dtype=float)
    if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] < 1:
        raise ValueError(f"bounds must have shape (d, 2) with rows (lower, upper); got shape {array.shape}.")
    if not np.all(np.isfinite(array)) or np.any(array[:, 0] >= array[:, 1]):
        raise ValueError(f"bounds must be finite with lower < upper in every row; got {array.tolist()}.")
    return array


class BayesianOptimization:
    """Sequential Bayesian optimization with an ask/tell interface.

    The loop minimises a black-box function on a box. It proposes a scrambled Sobol design
    for the first ``num_initial`` evaluations, then fits the surrogate to all finite
    evaluations (inputs mapped to the unit cube by ``bounds``, targets standardised by the
    model) and maximises the acquisition function. Every told evaluation is appended to
    ``journal`` and synced to disk before :meth:`tell` returns.

    Parameters
    ----------
    bounds : array of shape (d, 2)
        Lower and upper bound of each input.
    surrogate : str
        One of ``probnn.bo.SURROGATES``: ``tp-nngp`` (default), ``gp-nngp``, ``gp-matern``,
        ``gp-rbf`` or ``random``.
    acquisition : str
        ``logei`` (log expected improvement, default), ``ucb``, ``pi`` or ``ts`` (Thompson sampling).
    num_initial : int
        Size of the initial Sobol design.
    seed : int
        Seed of the design, the restarts and the candidate search.
    journal : path, optional
        JSON Lines file to record evaluations in; created, and an error if it exists.
    beta : float
        Exploration weight of ``ucb``.
    parameter_names : sequence of str, optional
    metadata : dict, optional
        Extra JSON-serialisable fields for the journal header (problem name, ...).

    Examples
    --------
    >>> loop = BayesianOptimization([[0.0, 1.0]], num_initial=3, seed=0)
    >>> x = loop.ask(); loop.tell(x, float((x[0] - 0.3) ** 2))
    """

    def __init__(
        self,
        bounds,
        *,
        surrogate: str = "tp-nngp",
        acquisition: str = "logei",
        num_initial: int = 10,
        seed: int = 0,
        journal=None,
        beta: float = 2.0,
        parameter_names=None,
        metadata: dict | None = None,
        _journal_object: Journal | None = None,
    ):
        self.bounds = check_bounds(bounds)
        self.dim = self.bounds.shape[0]
        if surrogate.lower() not in SURROGATES:
            raise ValueError(f"Unknown surrogate {surrogate!r}; choose one of {', '.join(SURROGATES)}.")
        if acquisition.lower() not in ACQUISITION_NAMES:
            raise ValueError(f"Unknown acquisition {acquisition!r}; choose one of {', '.join(ACQUISITION_NAMES)}.")
        if isinstance(num_initial, bool) or not isinstance(num_initial, int) or num_initial < 1:
            raise ValueError(f"num_initial must be a positive integer, got {num_initial!r}.")
        if not (np.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta must be finite and >= 0, got {beta!r}.")
        if acquisition.lower() == "ts" and surrogate.lower() in MARGINAL_ONLY:
            raise ValueError(
                f"The {surrogate} surrogate predicts marginals only, so Thompson sampling (ts) is unavailable; "
                "choose logei, ucb or pi."
            )
        self.surrogate = surrogate.lower()
        self.acquisition = acquisition.lower()
        self.num_initial = num_initial
        self.seed = int(seed)
        self.beta = float(beta)
        if parameter_names is None:
            parameter_names = [f"x{i + 1}" for i in range(self.dim)]
        if len(parameter_names) != self.dim:
            raise ValueError(f"parameter_names has {len(parameter_names)} entries for {self.dim} dimensions.")
        self.parameter_names = list(parameter_names)
        self._design = sobol_points(num_initial, self.dim, self.seed)
        self._model = make_surrogate(self.surrogate, self.dim)
        self._X_unit: list[np.ndarray] = []
        self._y: list[float] = []
        self._failed_unit: list[np.ndarray] = []
        self._num_told = 0
        self.posterior = None
        self._num_fits = 0
        self.last_timing = {"fit": 0.0, "acquisition": 0.0}
        self.messages: list[str] = []

        if _journal_object is not None:
            self._journal = _journal_object
        elif journal is not None:
            header = {
                "bounds": self.bounds.tolist(),
                "parameter_names": self.parameter_names,
                "surrogate": self.surrogate,
                "acquisition": self.acquisition,
                "num_initial": self.num_initial,
                "seed": self.seed,
                "beta": self.beta,
                "metadata": metadata or {},
            }
            self._journal = Journal.create(journal, header)
        else:
            self._journal = None

    # -- persistence -----------------------------------------------------------------

    @classmethod
    def resume(cls, journal) -> "BayesianOptimization":
        """Rebuild a loop from its journal, with every recorded evaluation, and keep appending to it."""
        record = Journal.open(journal)
        header = record.header
        loop = cls(
            header["bounds"],
            surrogate=header["surrogate"],
            acquisition=header["acquisition"],
            num_initial=header["num_initial"],
            seed=header["seed"],
            beta=header.get("beta", 2.0),
            parameter_names=header.get("parameter_names"),
            _journal_object=record,
        )
        for evaluation in record.evaluations:
            y = evaluation["y"]
            loop._record(np.asarray(evaluation["x"], dtype=float), math.nan if y is None else float(y))
        return loop

    @property
    def metadata(self) -> dict:
        return {} if self._journal is None else dict(self._journal.header.get("metadata", {}))

    # -- data ------------------------------------------------------------------------

    def _to_unit(self, x):
        return (np.asarray(x, dtype=float) - self.bounds[:, 0]) / (self.bounds[:, 1] - self.bounds[:, 0])

    def _from_unit(self, u):
        x = self.bounds[:, 0] + np.asarray(u) * (self.bounds[:, 1] - self.bounds[:, 0])
        return np.clip(x, self.bounds[:, 0], self.bounds[:, 1])

    @property
    def num_evaluations(self) -> int:
        """Number of told evaluations, failed ones included."""
        return self._num_told

    @property
    def X(self) -> np.ndarray:
        """Inputs of the finite evaluations, shape ``(n, d)``, in the original units."""
        if not self._X_unit:
            return np.zeros((0, self.dim))
        return self._from_unit(np.stack(self._X_unit))

    @property
    def y(self) -> np.ndarray:
        """Finite objective values, shape ``(n,)``."""
        return np.asarray(self._y, dtype=float)

    @property
    def best_value(self) -> float | None:
        return float(np.min(self._y)) if self._y else None

    @property
    def best_x(self) -> np.ndarray | None:
        if not self._y:
            return None
        return self.X[int(np.argmin(self._y))]

    # -- ask and tell ----------------------------------------------------------------

    def ask(self) -> np.ndarray:
        """Propose the next input to evaluate, shape ``(d,)``, inside the bounds."""
        index = self._num_told
        if index < self.num_initial:
            return self._from_unit(self._design[index])
        seed = _iteration_seed(self.seed, index)
        if self._model is None or len(self._y) < 1:
            return self._from_unit(np.random.default_rng(seed).uniform(size=self.dim))

        start = time.perf_counter()
        X_unit = np.stack(self._X_unit)
        y = np.asarray(self._y)
        full_refit = self._num_fits % FULL_REFIT_EVERY == 0
        posterior = self._model.fit(
            X_unit, y, key=jax.random.key(seed), num_restarts=None if full_refit else 1
        )
        self._num_fits += 1
        self._model = posterior.model
        self.posterior = posterior
        fitted = time.perf_counter()

        if self.acquisition == "ts":
            candidates = self._thompson_candidates(posterior, seed)
        else:
            params = _AcquisitionParams(
                posterior, jnp.asarray(np.min(y)), jnp.asarray(self.beta), kind=self.acquisition
            )
            candidates = optimize_acquisition(_acquisition_values, params, self.dim, seed=seed).X
        proposal = self._first_new(candidates, seed)
        self.last_timing = {"fit": fitted - start, "acquisition": time.perf_counter() - fitted}
        return self._from_unit(proposal)

    def _thompson_candidates(self, posterior, seed):
        candidates = sobol_points(1024, self.dim, seed)
        draw = np.asarray(posterior.sample_functions(jax.random.key(seed), candidates, 1))[0]
        return candidates[np.argsort(draw)]

    def _first_new(self, candidates: np.ndarray, seed: int) -> np.ndarray:
        """Return the best candidate that is not a repeat of an evaluated input."""
        seen = self._X_unit + self._failed_unit
        if not seen:
            return candidates[0]
        seen = np.stack(seen)
        for rank, candidate in enumerate(candidates):
            if np.min(np.max(np.abs(seen - candidate), axis=1)) > REPEAT_TOLERANCE:
                if rank > 0:
                    message = (
                        f"Evaluation {self._num_told + 1}: the acquisition optimum repeats an evaluated "
                        f"input; proposing the best distinct candidate (rank {rank + 1}) instead."
                    )
                    logger.info(message)
                    self.messages.append(message)
                return candidate
        message = f"Evaluation {self._num_told + 1}: every candidate repeats an evaluated input; proposing a random point."
        logger.warning(message)
        self.messages.append(message)
        return np.random.default_rng(seed).uniform(size=self.dim)

    def tell(self, x, y) -> None:
        """Record the value ``y`` of the objective at ``x``.

        ``x`` must lie inside the bounds (a relative tolerance of 1e-9 allows rounding);
        a non-finite ``y`` marks a failed evaluation, which is journalled and excluded
        from the model. The journal line is on disk when this returns.
        """
        x = np.asarray(x, dtype=float).reshape(-1)
        if x.shape != (self.dim,):
            raise ValueError(f"x must have shape ({self.dim},), got shape {np.shape(x)}.")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"x must be finite, got {x.tolist()}.")
        span = self.bounds[:, 1] - self.bounds[:, 0]
        outside = (x < self.bounds[:, 0] - 1e-9 * span) | (x > self.bounds[:, 1] + 1e-9 * span)
        if np.any(outside):
            dims = np.nonzero(outside)[0].tolist()
            raise ValueError(
                f"x = {x.tolist()} lies outside the bounds in dimensions {dims} "
                f"(bounds {self.bounds[dims].tolist()}); evaluate inside the bounds or widen them."
            )
        try:
            y = float(y)
        except (TypeError, ValueError):
            raise ValueError(f"y must be a number, got {y!r}.") from None
        x = np.clip(x, self.bounds[:, 0], self.bounds[:, 1])
        if self._journal is not None:
            self._journal.append(
                {
                    "index": self._num_told,
                    "x": x.tolist(),
                    "y": y if math.isfinite(y) else None,
                    "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
            )
        if not math.isfinite(y):
            warnings.warn(
                f"Evaluation at x = {x.tolist()} returned {y}; it is kept in the journal as failed "
                "and left out of the model.",
                RuntimeWarning,
                stacklevel=2,
            )
        self._record(x, y)

    def _record(self, x, y: float) -> None:
        unit = self._to_unit(x)
        if math.isfinite(y):
            self._X_unit.append(unit)
            self._y.append(y)
        else:
            self._failed_unit.append(unit)
        self._num_told += 1

    @property
    def journal_path(self) -> Path | None:
        return None if self._journal is None else self._journal.path
