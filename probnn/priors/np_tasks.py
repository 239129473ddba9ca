r"""One-dimensional regression tasks for training and evaluating neural processes.

Each task family draws a batch of ``B`` tasks in one jitted call. A task has up to
``max_points`` (50) inputs drawn uniformly on :math:`[-2, 2]`, split into a context set
and a target set,

.. math::

    N_c \sim \mathcal{U}\{3, \dots, L - 3\}, \qquad
    N_t \sim \mathcal{U}\{3, \dots, L - N_c\},

where ``L = max_points``. The first :math:`N_c` points are the context, the next
:math:`N_t` are the targets and the rest are padding, so every batch has the same shapes.
This is meant to match the split of the 1-d neural process benchmark used by
bootstrapping and martingale posterior neural processes (Lee et al., 2020; Lee et al.,
2023). The inputs are i.i.d., so the first :math:`N_c` points are a uniformly random
subset.

NOTE: the split and the hyperparameter ranges of :class:`GPNPTask` are recalled from
that benchmark, not checked against its code or papers.

Families (keys of :data:`NP_TASKS`):

* ``"rbf"``, ``"matern"``, ``"periodic"``: zero-mean Gaussian processes whose kernel
  hyperparameters are drawn per task (see :class:`GPNPTask`), with Gaussian noise of
  standard deviation 0.02.
* ``"t-noise"``: the ``"rbf"`` process with extra Student-t noise
  :math:`\gamma\,\varepsilon`, :math:`\varepsilon \sim t_{2.1}`, :math:`\gamma \sim \mathcal{U}[0, 0.15]`.
* ``"lotka-volterra"``: one population (predator or prey, chosen per task) of a
  stochastic Lotka-Volterra system (see :class:`LotkaVolterraNPTask`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

__all__ = [
    "GPNPTask",
    "LotkaVolterraNPTask",
    "NPTask",
    "NPTaskBatch",
    "NP_TASKS",
    "NP_X_RANGE",
    "make_np_task",
]

#: Input domain of every task family.
NP_X_RANGE = (-2.0, 2.0)

_KERNELS = ("rbf", "matern", "periodic")


class NPTaskBatch(NamedTuple):
    """A batch of ``B`` regression tasks padded to ``L`` points.

    Attributes
    ----------
    x : array of shape (B, L, 1)
        Inputs in ``[-2, 2]``.
    y : array of shape (B, L)
        Noisy outputs.
    context_mask : bool array of shape (B, L)
        True at the context points.
    target_mask : bool array of shape (B, L)
        True at the target points; disjoint from the context.
    """

    x: Float[Array, "B L 1"]
    y: Float[Array, "B L"]
    context_mask: Bool[Array, "B L"]
    target_mask: Bool[Array, "B L"]


def _check_range(values, name: str, low_limit: float = 0.0) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if not (low_limit <= low <= high and math.isfinite(high)):
        raise ValueError(f"{name} must be (low, high) with {low_limit} <= low <= high, got {values!r}.")
    return low, high


def _check_count(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


class NPTask(eqx.Module):
    """Base class: a family of 1-d regression tasks with a context/target split.

    Subclasses implement :meth:`sample_outputs`, the outputs at given inputs. A task
    family is an immutable pytree with static settings, so it can be passed into jitted
    functions.
    """

    max_points: int = eqx.field(static=True)
    min_context: int = eqx.field(static=True)
    min_target: int = eqx.field(static=True)

    def _check_split(self) -> None:
        _check_count(self.max_points, "max_points", 2)
        _check_count(self.min_context, "min_context", 0)
        _check_count(self.min_target, "min_target", 1)
        if self.min_context + self.min_target > self.max_points:
            raise ValueError(
                f"min_context + min_target ({self.min_context} + {self.min_target}) exceeds max_points "
                f"({self.max_points}); lower them or raise max_points."
            )

    def sample(self, key: Array, batch_size: int) -> NPTaskBatch:
        """Draw ``batch_size`` tasks of ``max_points`` padded points each.

        Each new ``batch_size`` compiles once.
        """
        _check_count(batch_size, "batch_size", 1)
        return _sample_jit(self, key, batch_size)

    def _sample(self, key: Array, batch_size: int) -> NPTaskBatch:
        key_x, key_y, key_split = jax.random.split(key, 3)
        low, high = NP_X_RANGE
        x = jax.random.uniform(key_x, (batch_size, self.max_points), minval=low, maxval=high)
        y = self.sample_outputs(key_y, x)
        context_mask, target_mask = split_masks(
            key_split, batch_size, self.max_points, self.min_context, self.min_target
        )
        return NPTaskBatch(x[..., None], y, context_mask, target_mask)

    def sample_outputs(self, key: Array, x: Float[Array, "B L"]) -> Float[Array, "B L"]:
        """Draw the noisy outputs of ``B`` tasks at the inputs ``x``."""
        raise NotImplementedError

    def config(self) -> dict:
        """Return the settings as a JSON-serialisable dictionary, with the class name under ``"type"``."""
        fields = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            fields[name] = list(value) if isinstance(value, tuple) else value
        return {"type": type(self).__name__, **fields}


@eqx.filter_jit
def _sample_jit(task: NPTask, key, batch_size: int) -> NPTaskBatch:
    return task._sample(key, batch_size)


def split_masks(key, batch_size: int, num_points: int, min_context: int, min_target: int):
    """Context and target masks ``(B, L)``: a random context size, then a random target size."""
    key_c, key_t = jax.random.split(key)
    num_context = jax.random.randint(key_c, (batch_size,), min_context, num_points - min_target + 1)
    # randint's upper bound may differ per task; draw a uniform fraction and scale it.
    room = num_points - num_context - min_target + 1
    num_target = min_target + jnp.floor(jax.random.uniform(key_t, (batch_size,)) * room).astype(jnp.int32)
    index = jnp.arange(num_points)[None, :]
    context_mask = index < num_context[:, None]
    target_mask = (index >= num_context[:, None]) & (index < (num_context + num_target)[:, None])
    return context_mask, target_mask


class GPNPTask(NPTask):
    r"""Tasks from a zero-mean Gaussian process with hyperparameters drawn per task.

    Kernels, with distance :math:`d = x - x'`:

    * ``"rbf"``: :math:`s^2 \exp(-d^2 / (2\ell^2))`;
    * ``"matern"`` (Matern-5/2): :math:`s^2 (1 + \sqrt5 r + \tfrac53 r^2) e^{-\sqrt5 r}`, :math:`r = |d| / \ell`;
    * ``"periodic"``: :math:`s^2 \exp(-2 \sin^2(\pi |d| / p) / \ell^2)`.

    The defaults are meant to be the ranges of the 1-d neural process benchmark (see the
    module's note): :math:`\ell \sim \mathcal{U}[0.1, 0.6]`,
    :math:`s \sim \mathcal{U}[0.1, 1]`, :math:`p \sim \mathcal{U}[0.1, 0.5]`, Gaussian noise
    with standard deviation 0.02. With ``t_noise_range`` set, outputs get extra noise
    :math:`\gamma\,\varepsilon` with :math:`\varepsilon \sim t_{\nu}` and
    :math:`\gamma \sim \mathcal{U}[\text{t\_noise\_range}]`.

    Parameters
    ----------
    kernel : {"rbf", "matern", "periodic"}
    lengthscale_range, scale_range, period_range : (float, float)
        Bounds of the uniform distributions of :math:`\ell`, :math:`s` and :math:`p`
        (``period_range`` is used by the periodic kernel only). ``low == high`` fixes the value.
    noise_sd : float
        Standard deviation of the Gaussian observation noise.
    t_noise_range : (float, float) or None
        Bounds of :math:`\gamma`; ``None`` for Gaussian noise only.
    t_noise_df : float
        Degrees of freedom :math:`\nu` of the Student-t noise.
    max_points, min_context, min_target : int
        Padded task length and the smallest context and target sets.

    Examples
    --------
    >>> import jax
    >>> batch = GPNPTask("rbf").sample(jax.random.key(0), batch_size=8)
    >>> batch.x.shape, batch.y.shape, batch.context_mask.shape
    ((8, 50, 1), (8, 50), (8, 50))
    """

    kernel: str = eqx.field(static=True)
    lengthscale_range: tuple = eqx.field(static=True)
    scale_range: tuple = eqx.field(static=True)
    period_range: tuple = eqx.field(static=True)
    noise_sd: float = eqx.field(static=True)
    t_noise_range: tuple | None = eqx.field(static=True)
    t_noise_df: float = eqx.field(static=True)

    def __init__(
        self,
        kernel: str = "rbf",
        lengthscale_range=(0.1, 0.6),
        scale_range=(0.1, 1.0),
        period_range=(0.1, 0.5),
        noise_sd: float = 0.02,
        t_noise_range=None,
        t_noise_df: float = 2.1,
        max_points: int = 50,
        min_context: int = 3,
        min_target: int = 3,
    ):
        if kernel not in _KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(_KERNELS)}; got {kernel!r}.")
        self.kernel = kernel
        self.lengthscale_range = _check_range(lengthscale_range, "lengthscale_range", 1e-6)
        self.scale_range = _check_range(scale_range, "scale_range", 1e-6)
        self.period_range = _check_range(period_range, "period_range", 1e-6)
        self.noise_sd = float(noise_sd)
        if not (self.noise_sd > 0 and math.isfinite(self.noise_sd)):
            raise ValueError(f"noise_sd must be positive and finite, got {noise_sd!r}.")
        self.t_noise_range = None if t_noise_range is None else _check_range(t_noise_range, "t_noise_range")
        self.t_noise_df = float(t_noise_df)
        if not self.t_noise_df > 0:
            raise ValueError(f"t_noise_df must be positive, got {t_noise_df!r}.")
        self.max_points = max_points
        self.min_context = min_context
        self.min_target = min_target
        self._check_split()

    def sample_hyperparameters(self, key: Array, batch_size: int) -> dict[str, Array]:
        """Draw ``lengthscale``, ``scale`` and ``period`` ``(B,)`` for ``batch_size`` tasks."""
        key_l, key_s, key_p = jax.random.split(key, 3)

        def uniform(k, bounds):
            return jax.random.uniform(k, (batch_size,), minval=bounds[0], maxval=bounds[1])

        return {
            "lengthscale": uniform(key_l, self.lengthscale_range),
            "scale": uniform(key_s, self.scale_range),
            "period": uniform(key_p, self.period_range),
        }

    def covariance(self, x: Float[Array, " L"], lengthscale, scale, period) -> Float[Array, "L L"]:
        """Kernel matrix of one task at inputs ``x``, without the noise."""
        distance = x[:, None] - x[None, :]
        if self.kernel == "rbf":
            return scale**2 * jnp.exp(-0.5 * (distance / lengthscale) ** 2)
        if self.kernel == "matern":
            r = jnp.abs(distance) / lengthscale
            return scale**2 * (1.0 + math.sqrt(5.0) * r + 5.0 / 3.0 * r**2) * jnp.exp(-math.sqrt(5.0) * r)
        return scale**2 * jnp.exp(-2.0 * (jnp.sin(math.pi * jnp.abs(distance) / period) / lengthscale) ** 2)

    def sample_latent_and_outputs(self, key: Array, x: Float[Array, "B L"]) -> tuple[Array, Array]:
        """Draw the function values ``f`` and the noisy outputs ``y`` at ``x``, both ``(B, L)``.

        ``f`` comes from a Cholesky factor of ``K + j I`` with a jitter ``j = 1e-4 s^2``
        that float32 needs for smooth kernels, and the Gaussian noise has variance
        ``noise_sd**2 - j`` (at least zero), so ``y`` has covariance ``K + noise_sd**2 I``
        whenever ``j <= noise_sd**2``.
        """
        key_h, key_f, key_e, key_t, key_g = jax.random.split(key, 5)
        batch_size, num_points = x.shape
        hyper = self.sample_hyperparameters(key_h, batch_size)
        gram = jax.vmap(self.covariance)(x, hyper["lengthscale"], hyper["scale"], hyper["period"])
        jitter = 1e-4 * hyper["scale"] ** 2
        eye = jnp.eye(num_points, dtype=x.dtype)
        factor = jnp.linalg.cholesky(gram + jitter[:, None, None] * eye)
        f = jnp.einsum("bij,bj->bi", factor, jax.random.normal(key_f, x.shape, x.dtype))
        gaussian_sd = jnp.sqrt(jnp.maximum(self.noise_sd**2 - jitter, 0.0))
        y = f + gaussian_sd[:, None] * jax.random.normal(key_e, x.shape, x.dtype)
        if self.t_noise_range is not None:
            low, high = self.t_noise_range
            gamma = jax.random.uniform(key_g, (batch_size, 1), minval=low, maxval=high)
            y = y + gamma * jax.random.t(key_t, self.t_noise_df, x.shape, x.dtype)
        return f, y

    def sample_outputs(self, key, x):
        return self.sample_latent_and_outputs(key, x)[1]


class LotkaVolterraNPTask(NPTask):
    r"""Tasks from a stochastic Lotka-Volterra predator-prey system.

    The populations follow the four reactions of Gordon et al. (2020, "Convolutional
    conditional neural processes"): predator birth at rate :math:`\theta_0 X Y`, predator
    death at :math:`\theta_1 X`, prey birth at :math:`\theta_2 Y` and prey death at
    :math:`\theta_3 X Y`, for predators :math:`X` and prey :math:`Y`. Instead of the
    discrete-event (Gillespie) simulation, whose number of events is unbounded, the paths
    solve the chemical Langevin equation, the diffusion limit of the same jump process,

    .. math::

        dX = (\theta_0 X Y - \theta_1 X)\,dt + \sqrt{\theta_0 X Y}\,dW_1 - \sqrt{\theta_1 X}\,dW_2,\\
        dY = (\theta_2 Y - \theta_3 X Y)\,dt + \sqrt{\theta_2 Y}\,dW_3 - \sqrt{\theta_3 X Y}\,dW_4,

    by Euler-Maruyama with ``num_steps`` steps on :math:`t \in [0, T]`. Populations are
    clipped to ``[0, max_population]`` after each step: zero is absorbing (every rate of an
    extinct species is zero), and the cap bounds the prey after the predators die out.

    Per task: :math:`\theta = (0.01, 0.5, 1, 0.01)` times independent log-uniform factors in
    ``[1 / theta_spread, theta_spread]``, initial populations uniform in
    ``initial_predators`` and ``initial_prey``, and one observed species (predator or prey,
    with probability 1/2 each). An input :math:`x \in [-2, 2]` is the time
    :math:`t = T (x + 2) / 4`, read by linear interpolation between steps, and the output is
    the population divided by ``output_scale`` (no observation noise).

    Parameters
    ----------
    horizon : float
        :math:`T`. The deterministic cycle at the base :math:`\theta` has a period of about
        :math:`2\pi / \sqrt{\theta_1 \theta_2} \approx 8.9`, so the default 20 shows about
        two cycles.
    num_steps : int
        Euler-Maruyama steps.
    theta_spread : float
        Largest factor between a task's rate and the base rate.
    initial_predators, initial_prey : (float, float)
        Bounds of the uniform initial populations. The defaults surround the equilibrium
        :math:`X = \theta_2 / \theta_3 = 100`, :math:`Y = \theta_1 / \theta_0 = 50`. Even
        so, one species dies out within the horizon in about one task in eight (estimated
        from 500 simulated paths), as happens in the stochastic system.
    max_population : float
        Cap on each population.
    output_scale : float
        Divisor of the populations.
    max_points, min_context, min_target : int
    """

    horizon: float = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    theta_spread: float = eqx.field(static=True)
    initial_predators: tuple = eqx.field(static=True)
    initial_prey: tuple = eqx.field(static=True)
    max_population: float = eqx.field(static=True)
    output_scale: float = eqx.field(static=True)

    def __init__(
        self,
        horizon: float = 20.0,
        num_steps: int = 400,
        theta_spread: float = 1.25,
        initial_predators=(80.0, 120.0),
        initial_prey=(40.0, 60.0),
        max_population: float = 1000.0,
        output_scale: float = 100.0,
        max_points: int = 50,
        min_context: int = 3,
        min_target: int = 3,
    ):
        self.horizon = float(horizon)
        self.num_steps = _check_count(num_steps, "num_steps", 1)
        self.theta_spread = float(theta_spread)
        if not (self.horizon > 0 and math.isfinite(self.horizon)):
            raise ValueError(f"horizon must be positive and finite, got {horizon!r}.")
        if not self.theta_spread >= 1:
            raise ValueError(f"theta_spread must be >= 1, got {theta_spread!r}.")
        self.initial_predators = _check_range(initial_predators, "initial_predators")
        self.initial_prey = _check_range(initial_prey, "initial_prey")
        self.max_population = float(max_population)
        self.output_scale = float(output_scale)
        if not (self.max_population > 0 and self.output_scale > 0):
            raise ValueError("max_population and output_scale must be positive.")
        self.max_points = max_points
        self.min_context = min_context
        self.min_target = min_target
        self._check_split()

    def simulate(self, key: Array, batch_size: int) -> Float[Array, "B S 2"]:
        """Simulate ``batch_size`` paths; returns ``(B, num_steps + 1, 2)`` predators and prey."""
        key_theta, key_x0, key_y0, key_path = jax.random.split(key, 4)
        base = jnp.array([0.01, 0.5, 1.0, 0.01])
        log_spread = math.log(self.theta_spread)
        theta = base * jnp.exp(jax.random.uniform(key_theta, (batch_size, 4), minval=-log_spread, maxval=log_spread))
        predators = jax.random.uniform(key_x0, (batch_size,), minval=self.initial_predators[0],
                                       maxval=self.initial_predators[1])
        prey = jax.random.uniform(key_y0, (batch_size,), minval=self.initial_prey[0], maxval=self.initial_prey[1])
        dt = self.horizon / self.num_steps

        def step(state, step_key):
            x, y = state
            rates = jnp.stack([theta[:, 0] * x * y, theta[:, 1] * x, theta[:, 2] * y, theta[:, 3] * x * y], axis=-1)
            # One Wiener increment per reaction, with variance equal to its expected count.
            noise = jnp.sqrt(rates * dt) * jax.random.normal(step_key, rates.shape)
            counts = rates * dt + noise
            x = jnp.clip(x + counts[:, 0] - counts[:, 1], 0.0, self.max_population)
            y = jnp.clip(y + counts[:, 2] - counts[:, 3], 0.0, self.max_population)
            return (x, y), jnp.stack([x, y], axis=-1)

        keys = jax.random.split(key_path, self.num_steps)
        _, path = jax.lax.scan(step, (predators, prey), keys)
        start = jnp.stack([predators, prey], axis=-1)[None]
        return jnp.moveaxis(jnp.concatenate([start, path]), 0, 1)

    def sample_outputs(self, key, x):
        key_path, key_species = jax.random.split(key)
        batch_size = x.shape[0]
        path = self.simulate(key_path, batch_size)
        species = jax.random.bernoulli(key_species, 0.5, (batch_size,)).astype(jnp.int32)
        series = jnp.take_along_axis(path, species[:, None, None], axis=-1)[..., 0]
        low, high = NP_X_RANGE
        grid = jnp.linspace(low, high, self.num_steps + 1)
        values = jax.vmap(jnp.interp, in_axes=(0, None, 0))(x, grid, series)
        return (values / self.output_scale).astype(x.dtype)


#: Task families by name; each entry builds the family with its benchmark settings.
NP_TASKS = {
    "rbf": lambda: GPNPTask("rbf"),
    "matern": lambda: GPNPTask("matern"),
    "periodic": lambda: GPNPTask("periodic"),
    "t-noise": lambda: GPNPTask("rbf", t_noise_range=(0.0, 0.15)),
    "lotka-volterra": lambda: LotkaVolterraNPTask(),
}


def make_np_task(name: str) -> NPTask:
    """Build the task family ``name``; raises ``ValueError`` naming the choices for unknown names."""
    if name not in NP_TASKS:
        raise ValueError(f"Unknown neural process task {name!r}; choose one of {', '.join(NP_TASKS)}.")
    return NP_TASKS[name]()
