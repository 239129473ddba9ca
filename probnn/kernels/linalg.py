"""Cholesky factorisation with an escalating jitter, and the solves built on it."""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

#: Number of jitter levels tried after the plain factorisation; each is ten times the last.
MAX_JITTER_TRIES = 12


class CholeskyResult(NamedTuple):
    """Lower Cholesky factor of ``A + jitter * I``, the jitter used, and whether it succeeded."""

    factor: Float[Array, "n n"]
    jitter: Float[Array, ""]
    success: Bool[Array, ""]


def initial_jitter(A: Float[Array, "n n"]) -> Float[Array, ""]:
    """First jitter level: ten machine epsilons of ``A``'s dtype times its mean diagonal."""
    eps = jnp.finfo(A.dtype).eps
    return 10.0 * eps * _diagonal_scale(A)


def _diagonal_scale(A):
    return jnp.maximum(jnp.mean(jnp.abs(jnp.diagonal(A))), jnp.finfo(A.dtype).tiny)


def _is_usable(L, A):
    """Whether ``L`` is finite and no squared pivot fell below rounding level.

    LAPACK can return a finite factor of an exactly singular matrix (for example from
    repeated inputs without noise), with pivots of order ``sqrt(eps)``. Such a factor
    gives meaningless solves, so it counts as a failure and jitter is added.
    """
    return factor_is_usable(L, _diagonal_scale(A))


def factor_is_usable(L, diagonal_scale) -> Bool[Array, ""]:
    """Tell whether the factor ``L`` of a matrix whose mean absolute diagonal is ``diagonal_scale`` is usable.

    Usable means finite, with every squared pivot at least ``n * eps * diagonal_scale``;
    see :func:`factor_with_jitter`.
    """
    threshold = L.shape[-1] * jnp.finfo(L.dtype).eps * diagonal_scale
    return jnp.all(jnp.isfinite(L)) & (jnp.min(jnp.diagonal(L)) ** 2 >= threshold)


def jitter_levels(diagonal_scale: float, dtype, max_tries: int = MAX_JITTER_TRIES) -> list[float]:
    """List the jitters :func:`factor_with_jitter` tries, in order: 0, then ``10 eps scale * 10^k``."""
    start = 10.0 * float(jnp.finfo(dtype).eps) * max(float(diagonal_scale), float(jnp.finfo(dtype).tiny))
    return [0.0] + [start * 10.0**k for k in range(max_tries)]


def factor_with_jitter(A: Float[Array, "n n"], max_tries: int = MAX_JITTER_TRIES) -> CholeskyResult:
    """Factorise ``A``, adding the smallest jitter that gives a usable factor.

    The plain factorisation is tried first. Then ``j0 * 10^k`` is added to the diagonal for
    ``k = 0, 1, ...`` with ``j0`` from :func:`initial_jitter`, until the factor is finite
    with no squared pivot below ``n * eps * mean(diag(A))``, or ``max_tries`` levels have
    failed. Pure and jittable, but not differentiable (it is a ``while_loop``); use
    :func:`cholesky_with_jitter` for gradients.
    """
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    start = initial_jitter(A)

    def not_done(carry):
        tries, _, _, ok = carry
        return (~ok) & (tries <= max_tries)

    def attempt(carry):
        tries, _, _, _ = carry
        level = start * 10.0 ** (tries - 1)
        L = jnp.linalg.cholesky(A + level * eye)
        return tries + 1, level, L, _is_usable(L, A)

    L0 = jnp.linalg.cholesky(A)
    init = (1, jnp.zeros((), A.dtype), L0, _is_usable(L0, A))
    _, level, L, ok = jax.lax.while_loop(not_done, attempt, init)
    return CholeskyResult(L, level, ok)


def cholesky_with_jitter(A: Float[Array, "n n"], max_tries: int = MAX_JITTER_TRIES) -> CholeskyResult:
    """Differentiable version of :func:`factor_with_jitter`.

    The jitter is found on ``stop_gradient(A)`` and then treated as a constant, so the
    factor of ``A + jitter * I`` can be differentiated with respect to ``A`` under
    ``jit`` and ``vmap``. It factorises twice; the fitting code avoids it by using
    :func:`gaussian_log_det_and_quadratic`, whose gradient is written out.

    This function is pure and never warns; :func:`cholesky` is the checked wrapper that
    warns about the jitter and raises on failure.

    NOTE: with jax 0.10.2 on CPU, the jitter search (a ``while_loop``) nested inside a
    vmapped ``while_loop`` deadlocked once its retry branch ran. Inside such loops, prefer
    a fixed jitter, as the fitting objective does.
    """
    search = factor_with_jitter(jax.lax.stop_gradient(A), max_tries)
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    factor = jnp.linalg.cholesky(A + search.jitter * eye)
    return CholeskyResult(factor, search.jitter, search.success)


_cholesky_jit = jax.jit(factor_with_jitter, static_argnames="max_tries")


class CholeskyError(ValueError):
    """Raised when a matrix cannot be factorised even with the largest jitter."""


def cholesky(A, *, what: str = "the covariance matrix", max_tries: int = MAX_JITTER_TRIES) -> Array:
    """Factorise ``A``, warning with the jitter used and raising when every level fails.

    Call it outside ``jit``: the checks need concrete values.

    Raises
    ------
    CholeskyError
        If ``A + j * I`` has no finite Cholesky factor for the largest jitter ``j``.
    """
    result = _cholesky_jit(jnp.asarray(A), max_tries=max_tries)
    report_cholesky(result, what)
    return result.factor


def report_cholesky(result: CholeskyResult, what: str) -> None:
    """Warn about the jitter a :class:`CholeskyResult` used, or raise if it failed."""
    jitter = float(result.jitter)
    if not bool(result.success):
        raise CholeskyError(
            f"Cholesky factorisation of {what} failed even with jitter {jitter:.3g} on the "
            "diagonal. The matrix is not positive definite: check for NaN inputs, increase "
            "the noise variance or its lower bound, or enable float64 with "
            "jax.config.update('jax_enable_x64', True)."
        )
    if jitter > 0.0:
        warnings.warn(
            f"Cholesky factorisation of {what} needed jitter {jitter:.3g} on the diagonal "
            "(the matrix is numerically singular, e.g. from repeated inputs without noise).",
            NumericalWarning,
            stacklevel=3,
        )


class NumericalWarning(RuntimeWarning):
    """Warning raised when probnn applies a numerical remedy such as jitter or clipping."""


#: Factors with more rows than this are solved against block by block; see
#: :func:`blocked_cholesky` for the reason.
BLOCKED_SOLVE_ABOVE = 8192


def solve_triangular_lower(L, B):
    """Solve ``L X = B`` for lower-triangular ``L`` (blocked above :data:`BLOCKED_SOLVE_ABOVE` rows)."""
    if L.shape[-1] > BLOCKED_SOLVE_ABOVE:
        return blocked_solve_lower(L, B)
    return jax.scipy.linalg.solve_triangular(L, B, lower=True)


def cho_solve(L, B):
    """Solve ``(L L^T) X = B`` given the lower Cholesky factor ``L``."""
    if L.shape[-1] > BLOCKED_SOLVE_ABOVE:
        return blocked_solve_lower_transpose(L, blocked_solve_lower(L, B))
    return jax.scipy.linalg.cho_solve((L, True), B)


def log_det_from_cholesky(L) -> Array:
    """Log determinant of ``L L^T``."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(L)))


#: Jitter of the marginal-likelihood objective, in units of eps times the mean diagonal.
OBJECTIVE_JITTER = 1000.0


def _objective_factor(A):
    # The objective runs inside vmapped L-BFGS loops, where a data-dependent jitter search
    # (a while_loop) deadlocked XLA's CPU runtime (jax 0.10.2). A fixed jitter of about
    # 2e-13 of the mean diagonal needs no control flow; where it is not enough the factor
    # is NaN, the loss is NaN, and the line search steps back.
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    jitter = OBJECTIVE_JITTER * jnp.finfo(A.dtype).eps * _diagonal_scale(jax.lax.stop_gradient(A))
    return jnp.linalg.cholesky(A + jitter * eye)


@jax.custom_vjp
def gaussian_log_det_and_quadratic(A: Float[Array, "n n"], y: Float[Array, " n"]):
    r"""Return :math:`\log |A|` and :math:`y^\top A^{-1} y` from one Cholesky factorisation.

    Every Gaussian and Student-t marginal likelihood is a function of these two numbers.
    The gradients are written out, :math:`\partial \log|A| / \partial A = A^{-1}` and
    :math:`\partial q / \partial A = -a a^\top` with :math:`a = A^{-1} y`, which is
    several times cheaper than differentiating through the Cholesky factorisation.
    A fixed jitter of ``1000 * eps * mean(diag(A))`` is added; a matrix that is still not
    positive definite gives NaN.
    """
    L = _objective_factor(A)
    a = cho_solve(L, y)
    return log_det_from_cholesky(L), jnp.dot(y, a)


def _log_det_quadratic_forward(A, y):
    L = _objective_factor(A)
    a = cho_solve(L, y)
    return (log_det_from_cholesky(L), jnp.dot(y, a)), (L, a)


def _log_det_quadratic_backward(residuals, cotangents):
    L, a = residuals
    log_det_bar, quadratic_bar = cotangents
    A_inv = cho_solve(L, jnp.eye(L.shape[-1], dtype=L.dtype))
    A_bar = log_det_bar * A_inv - quadratic_bar * jnp.outer(a, a)
    # q = y^T A^{-1} y gives dq/dy = 2 a.
    y_bar = 2.0 * quadratic_bar * a
    return A_bar, y_bar


gaussian_log_det_and_quadratic.defvjp(_log_det_quadratic_forward, _log_det_quadratic_backward)


# -- blocked factorisation and solves for large matrices ---------------------------------------
#
# jaxlib hands Cholesky factorisations and triangular solves to the LAPACK of SciPy's
# OpenBLAS, which crashed (segfault in its copy kernel) on float64 matrices of 2^31 bytes
# or more, i.e. from 16,384 rows, with jax 0.10.2 on x86-64. The blocked versions below
# only ever pass it blocks of ``block`` columns, and multiply with XLA's own dot.


def _block_starts(size: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(start + block, size)) for start in range(0, size, block)]


def blocked_cholesky(A: Float[Array, "n n"], block: int = 1024) -> Float[Array, "n n"]:
    """Factorise ``A`` (lower Cholesky) by the left-looking blocked algorithm, in ``A``'s storage.

    For each column block ``k`` (columns ``s:e``), subtract the contribution of the
    factorised columns to its left, ``A[:, s:e] -= L[:, :s] L[s:e, :s]^T``, factorise the
    diagonal block, solve for the rows below it, and write the column block back. The
    loop is a ``fori_loop`` whose carry XLA updates in place, so besides ``A`` only
    ``n x block`` arrays are held. The product runs over all ``n`` rows and columns with
    the columns from ``s`` on masked to zero (shapes must be static), about three times
    the flops of the triangular product, in exchange for no second ``n x n`` array.
    ``block`` is reduced to a divisor of ``n``. A matrix that is not positive definite
    gives NaN, as :func:`jax.numpy.linalg.cholesky` does.
    """
    size = A.shape[-1]
    # NOTE: a size with no large divisor (a prime, say) leaves tiny blocks and a slow loop.
    # The exact processes only pass padded sizes, which above 4,096 are multiples of 1,024.
    block = math.gcd(size, block)
    positions = jnp.arange(size)

    def column_block(k, A):
        start = k * block
        column = jax.lax.dynamic_slice(A, (0, start), (size, block))
        # Row block s:e of L; its columns from s on are not factorised yet and are masked out.
        left = jnp.where(positions[None, :] < start, jax.lax.dynamic_slice(A, (start, 0), (block, size)), 0.0)
        column = column - A @ left.T
        diagonal = jnp.linalg.cholesky(jax.lax.dynamic_slice(column, (start, 0), (block, block)))
        below = jax.scipy.linalg.solve_triangular(diagonal, column.T, lower=True).T
        below = jnp.where(positions[:, None] < start, 0.0, below)
        return jax.lax.dynamic_update_slice(A, jax.lax.dynamic_update_slice(below, diagonal, (start, 0)), (0, start))

    return jax.lax.fori_loop(0, size // block, column_block, A)


def blocked_solve_lower(L: Float[Array, "n n"], B, block: int = 1024):
    """Solve ``L X = B`` for lower-triangular ``L`` by forward substitution over row blocks."""
    vector = B.ndim == 1
    B = B[:, None] if vector else B
    parts = []
    for start, end in _block_starts(L.shape[-1], block):
        rhs = B[start:end]
        if start > 0:
            rhs = rhs - L[start:end, :start] @ jnp.concatenate(parts, axis=0)
        parts.append(jax.scipy.linalg.solve_triangular(L[start:end, start:end], rhs, lower=True))
    X = jnp.concatenate(parts, axis=0)
    return X[:, 0] if vector else X


def blocked_solve_lower_transpose(L: Float[Array, "n n"], B, block: int = 1024):
    """Solve ``L^T X = B`` for lower-triangular ``L`` by back substitution over row blocks."""
    vector = B.ndim == 1
    B = B[:, None] if vector else B
    size = L.shape[-1]
    parts = []
    for start, end in reversed(_block_starts(size, block)):
        rhs = B[start:end]
        if end < size:
            rhs = rhs - L[end:, start:end].T @ jnp.concatenate(parts, axis=0)
        parts.insert(0, jax.scipy.linalg.solve_triangular(L[start:end, start:end], rhs, lower=True, trans="T"))
    X = jnp.concatenate(parts, axis=0)
    return X[:, 0] if vector else X
