r"""Infinite-width kernels of fully connected networks: the NNGP and the NTK.

The network has ``depth`` hidden layers of width ``n`` and activation :math:`\phi`:

.. math::

    h^1 = \sqrt{\sigma_w^2 / d}\, W^1 (x / l) + \sigma_b b^1, \qquad
    h^{k+1} = \sqrt{\sigma_w^2 / n}\, W^{k+1} \phi(h^k) + \sigma_b b^{k+1},

    f(x) = \sqrt{v} \left( \sqrt{\sigma_w^2 / n}\, W^{L+1} \phi(h^L) + \sigma_b b^{L+1} \right),

with standard normal weights and biases. As ``n`` grows, ``f`` tends to a Gaussian process
whose covariance is the NNGP kernel :math:`v K^L` (Neal, 1996; Lee et al., "Deep Neural
Networks as Gaussian Processes", ICLR 2018):

.. math::

    K^0(x, x') = \sigma_b^2 + \sigma_w^2 \frac{\langle x/l, x'/l \rangle}{d}, \qquad
    K^{k}(x, x') = \sigma_b^2 + \sigma_w^2\,
        \mathbb{E}_{(u, u') \sim \mathcal{N}(0, \Sigma^{k-1})}[\phi(u) \phi(u')],

where :math:`\Sigma^{k-1}` is the 2x2 covariance built from :math:`K^{k-1}`. The neural
tangent kernel (Jacot et al., NeurIPS 2018) of the same network, differentiating with
respect to all weights and biases but not ``v``, is :math:`v \Theta^L` with

.. math::

    \Theta^0 = K^0, \qquad
    \Theta^k = K^k + \sigma_w^2\, \mathbb{E}[\phi'(u) \phi'(u')]\, \Theta^{k-1}.

The expectations are closed forms: the arc-cosine kernel of order one for ReLU (Cho and
Saul, NeurIPS 2009) and the arcsine kernel for erf (Williams, NeurIPS 1996). The last-layer
variance ``v`` multiplies the whole kernel, so a prior on ``v`` gives a scale mixture of
NNGPs (Lee, Yun, Yang and Lee, ICLR 2022).
"""

from __future__ import annotations

import numbers

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from probnn.kernels.base import Kernel, _log_normal_log_density, positive_array

ACTIVATIONS = ("relu", "erf")


def _clip_correlation(rho):
    # arccos and arcsin have infinite slope at +-1, which x = x' reaches. Clipping a few
    # ulps inside keeps gradients finite and changes the kernel by O(eps).
    bound = 1.0 - 16.0 * jnp.finfo(rho.dtype).eps
    return jnp.clip(rho, -bound, bound)


def _relu_expectations(k12, k11, k22):
    """Return E[relu(u) relu(u')] and E[step(u) step(u')] for (u, u') ~ N(0, [[k11, k12], [k12, k22]]).

    ``k11`` has shape (n, 1) and ``k22`` shape (1, m). With cos(theta) = rho the closed
    form is sqrt(k11 k22) (sin(theta) + (pi - theta) rho) / (2 pi); sin(theta) is
    sqrt(1 - rho^2), so each entry costs one square root and one arctangent.
    """
    root11 = jnp.sqrt(k11)
    root22 = jnp.sqrt(k22)
    rho = _clip_correlation(k12 * ((1.0 / root11) * (1.0 / root22)))
    sine = jnp.sqrt(1.0 - rho * rho)
    angle = jnp.arctan2(sine, rho)
    value = (root11 * root22) * (sine + (jnp.pi - angle) * rho) * (0.5 / jnp.pi)
    derivative = (jnp.pi - angle) * (0.5 / jnp.pi)
    return value, derivative


def _relu_diag(k):
    # theta = 0 on the diagonal: E[relu(u)^2] = k / 2 and E[step(u)^2] = 1 / 2.
    return 0.5 * k, jnp.full_like(k, 0.5)


def _erf_expectations(k12, k11, k22):
    """Return E[erf(u) erf(u')] and E[erf'(u) erf'(u')] for the same bivariate normal."""
    inverse11 = 1.0 / jnp.sqrt(1.0 + 2.0 * k11)
    inverse22 = 1.0 / jnp.sqrt(1.0 + 2.0 * k22)
    rho = _clip_correlation(2.0 * k12 * (inverse11 * inverse22))
    value = 2.0 / jnp.pi * jnp.arcsin(rho)
    # erf'(u) = 2 exp(-u^2) / sqrt(pi); the Gaussian integral gives
    # 4 / (pi sqrt(a11 a22 - 4 k12^2)) = 4 / (pi sqrt(a11 a22) sqrt(1 - rho^2)) with a = 1 + 2k.
    derivative = (4.0 / jnp.pi) * (inverse11 * inverse22) / jnp.sqrt(1.0 - rho * rho)
    return value, derivative


def _erf_diag(k):
    a = 1.0 + 2.0 * k
    value = 2.0 / jnp.pi * jnp.arcsin(2.0 * k / a)
    derivative = 4.0 / (jnp.pi * jnp.sqrt(a * a - 4.0 * k * k))
    return value, derivative


_EXPECTATIONS = {"relu": (_relu_expectations, _relu_diag), "erf": (_erf_expectations, _erf_diag)}


class _FullyConnected(Kernel):
    variance: Float[Array, ""]
    weight_variance: Float[Array, ""]
    bias_variance: Float[Array, ""]
    lengthscale: Float[Array, "..."]
    depth: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    input_offset: float = eqx.field(static=True)
    normalize: bool = eqx.field(static=True)

    def __init__(
        self,
        depth: int = 3,
        activation: str = "relu",
        weight_variance=None,
        bias_variance=0.1,
        variance=1.0,
        lengthscale=1.0,
        input_offset: float = 0.0,
        normalize: bool = False,
    ):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
            raise ValueError(f"depth must be a positive integer (the number of hidden layers), got {depth!r}.")
        depth = int(depth)
        if weight_variance is None:
            # He initialisation keeps the ReLU pre-activation variance constant with depth.
            weight_variance = 2.0 if activation == "relu" else 1.0
        self.depth = depth
        self.activation = activation
        self.variance = positive_array(variance, "variance")
        self.weight_variance = positive_array(weight_variance, "weight_variance")
        self.bias_variance = positive_array(bias_variance, "bias_variance")
        self.lengthscale = positive_array(lengthscale, "lengthscale")
        self.input_offset = float(input_offset)
        self.normalize = bool(normalize)
        for name in ("variance", "weight_variance", "bias_variance"):
            if getattr(self, name).ndim != 0:
                raise ValueError(f"{name} must be a scalar, got shape {getattr(self, name).shape}.")

    def with_input_dim(self, dim: int):
        """Return a copy with one input lengthscale per dimension (ARD on the first layer)."""
        if self.lengthscale.ndim == 0:
            return eqx.tree_at(lambda k: k.lengthscale, self, jnp.full(dim, self.lengthscale))
        if self.lengthscale.shape[0] != dim:
            raise ValueError(
                f"lengthscale has {self.lengthscale.shape[0]} entries but the inputs have {dim} "
                "dimensions; pass a scalar or one lengthscale per dimension."
            )
        return self

    def log_prior(self):
        """Log density of the default hyperprior: independent log-normals.

        The weight variance is centred on its initialisation value (2 for ReLU, 1 for erf)
        and the bias variance on 0.1, and the lengthscales on 1, all with log-scale 1; the
        output variance gets log-scale 2 around 1. Without the lengthscale prior the
        marginal likelihood often drives the lengthscales to about 0.01, where the bias no
        longer matters and the kernel depends only on angles between inputs.
        """
        centre = 2.0 if self.activation == "relu" else 1.0
        terms = [
            _log_normal_log_density(jnp.log(self.weight_variance), jnp.log(centre), 1.0),
            _log_normal_log_density(jnp.log(self.bias_variance), jnp.log(0.1), 1.0),
            _log_normal_log_density(jnp.log(self.variance), 0.0, 2.0),
            jnp.sum(_log_normal_log_density(jnp.log(jnp.ravel(self.lengthscale)), 0.0, 1.0)),
        ]
        return sum(terms)

    def _input_layer(self, X1, X2):
        dim = X1.shape[-1]
        A = (X1 - self.input_offset) / self.lengthscale
        B = (X2 - self.input_offset) / self.lengthscale
        scale = self.weight_variance / dim
        k12 = self.bias_variance + scale * (A @ B.T)
        k11 = self.bias_variance + scale * jnp.sum(A**2, axis=-1)
        k22 = self.bias_variance + scale * jnp.sum(B**2, axis=-1)
        return k12, k11, k22

    def _recursion(self, X1, X2, with_ntk: bool):
        """Run the layer recursion on whole matrices.

        Returns the final NNGP block ``K^L`` and its two diagonals, and ``Theta^L`` when
        ``with_ntk`` is true.
        """
        expectations, diag_expectations = _EXPECTATIONS[self.activation]
        k12, k11, k22 = self._input_layer(X1, X2)
        ntk = k12 if with_ntk else None
        for _ in range(self.depth):
            value, derivative = expectations(k12, k11[:, None], k22[None, :])
            value11, _ = diag_expectations(k11)
            value22, _ = diag_expectations(k22)
            k12 = self.bias_variance + self.weight_variance * value
            k11 = self.bias_variance + self.weight_variance * value11
            k22 = self.bias_variance + self.weight_variance * value22
            if with_ntk:
                ntk = k12 + self.weight_variance * derivative * ntk
        return k12, k11, k22, ntk

    def _diag_recursion(self, X, with_ntk: bool):
        _, diag_expectations = _EXPECTATIONS[self.activation]
        dim = X.shape[-1]
        A = (X - self.input_offset) / self.lengthscale
        k = self.bias_variance + self.weight_variance / dim * jnp.sum(A**2, axis=-1)
        ntk = k
        for _ in range(self.depth):
            value, derivative = diag_expectations(k)
            k = self.bias_variance + self.weight_variance * value
            ntk = k + self.weight_variance * derivative * ntk
        return ntk if with_ntk else k


class NNGP(_FullyConnected):
    r"""NNGP kernel of a fully connected network with ``depth`` hidden layers.

    See the module docstring for the recursion. ``variance`` is the last-layer variance
    :math:`v`; ``lengthscale`` divides the inputs (a vector gives ARD on the first layer).

    Parameters
    ----------
    depth : int
        Number of hidden layers ``L``.
    activation : {"relu", "erf"}
    weight_variance : float, optional
        :math:`\sigma_w^2`; defaults to 2 for ReLU and 1 for erf.
    bias_variance : float
        :math:`\sigma_b^2`.
    variance : float
        Last-layer variance :math:`v`.
    lengthscale : float or array of shape (d,)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> kernel = NNGP(depth=3, activation="relu")
    >>> kernel(jnp.ones((4, 2))).shape
    (4, 4)
    """

    def cross(self, X1, X2):
        k12, k11, k22, _ = self._recursion(X1, X2, with_ntk=False)
        if self.normalize:
            k12 = k12 / jnp.sqrt(k11[:, None] * k22[None, :])
        return self.variance * k12

    def diag(self, X):
        if self.normalize:
            return jnp.full(X.shape[0], self.variance, dtype=jnp.result_type(X, self.variance))
        return self.variance * self._diag_recursion(X, with_ntk=False)


class NTK(_FullyConnected):
    r"""Neural tangent kernel of the network described by :class:`NNGP`.

    It has the same parameters. The kernel is :math:`v \Theta^L`, the expected inner
    product of parameter gradients of the network output at initialisation under the
    parameterisation of the module docstring.
    """

    def cross(self, X1, X2):
        _, _, _, ntk = self._recursion(X1, X2, with_ntk=True)
        return self.variance * ntk

    def diag(self, X):
        return self.variance * self._diag_recursion(X, with_ntk=True)
