"""Surrogate models available to the Bayesian optimization loop, by name."""

from __future__ import annotations

from typing import Callable

from probnn.kernels import NNGP, RBF, Matern52
from probnn.processes import GaussianProcess, StudentTProcess

#: Restarts of the hyperparameter fit inside the loop; the first start is always the
#: previous iteration's optimum, so few random restarts are needed.
LOOP_RESTARTS = 3


def _gp_rbf(dim: int):
    return GaussianProcess(RBF().with_input_dim(dim), num_restarts=LOOP_RESTARTS)


def _gp_matern(dim: int):
    return GaussianProcess(Matern52().with_input_dim(dim), num_restarts=LOOP_RESTARTS)


def _bo_nngp(dim: int) -> NNGP:
    """Depth-3 ReLU NNGP for inputs in the unit cube, in its correlation form.

    The raw NNGP's prior variance grows with the distance from the origin, so far from the
    data the posterior is most uncertain in the corners of the box and the acquisition
    function keeps proposing corners. Centring the inputs at the middle of the cube and
    normalising the kernel to unit prior variance (the network output divided by its prior
    standard deviation) removes that pull. In a four-seed trial on Hartmann-6 (10 Sobol
    points and 40 iterations) the Student-t surrogate's median regret was about 2 with
    centring alone and 0.17 with centring and normalisation.
    """
    return NNGP(depth=3, activation="relu", input_offset=0.5, normalize=True).with_input_dim(dim)


def _gp_nngp(dim: int):
    return GaussianProcess(_bo_nngp(dim), num_restarts=LOOP_RESTARTS)


def _tp_nngp(dim: int):
    return StudentTProcess(_bo_nngp(dim), num_restarts=LOOP_RESTARTS)


def _ensemble(dim: int):
    """Five ReLU MLPs (50, 50) trained on all rows, differing by initialisation only.

    In a four-seed trial on Hartmann-6 (10 Sobol points and 40 iterations, log EI) the
    median regret was 0.18 with ReLU and no resampling, 0.48 with ReLU and bootstrap
    resampling, and 0.72 with tanh and bootstrap resampling. BO uses the latent predictive,
    so the noise estimate, which needs resampling, does not enter the acquisition.
    """
    from probnn.bnn.ensemble import DeepEnsemble

    return DeepEnsemble(activation="relu", resampling="none")


def _hmc(dim: int):
    from probnn.bnn.hmc import HMCNetwork

    return HMCNetwork()


def _sghmc(dim: int):
    from probnn.bnn.hmc import SGMCMCNetwork

    return SGMCMCNetwork()


def _laplace(dim: int):
    """ReLU MLP with one hidden layer of 100 units and a full-GGN Laplace posterior.

    In a four-seed trial on Hartmann-6 (10 Sobol points and 40 iterations, log EI) the
    median regret was 0.61 with this network, 0.83 with ReLU (50,) and 1.2 with a last-layer
    Laplace posterior on tanh (50, 50). Tanh (50, 50) with the full GGN reached 0.86 over
    three of those seeds.
    """
    from probnn.bnn.laplace import LaplaceNetwork

    return LaplaceNetwork(widths=(100,), activation="relu")


def _dkl(dim: int):
    """Deep kernel learning: RBF kernel on residual tanh MLP (50, 50) features, Lipschitz bound 0.2.

    In a ten-seed trial on Hartmann-6 (10 Sobol points and 40 iterations, log EI) the median
    regret was 0.41 with the bound and 0.76 without it (see DeepKernelGP for why).
    """
    from probnn.bnn.dkl import DeepKernelGP

    return DeepKernelGP()


def _partial(dim: int):
    """Tanh MLP (50, 50) body trained on squared error with a normal-inverse-gamma Bayesian readout."""
    from probnn.bnn.partial import PartiallyStochasticNetwork

    return PartiallyStochasticNetwork()


def _partial_hmc(dim: int):
    """Tanh MLP (50, 50) body trained on squared error; NUTS over the readout weights and the noise."""
    from probnn.bnn import HMCNetwork, NetworkPrior
    from probnn.bnn.partial import PartiallySampledNetwork
    from probnn.samplers import SamplerSettings

    # The trained body can fit the targets almost exactly, so the noise runs towards zero
    # and NUTS diverges in the narrowing funnel. On Branin at 12 points, 104 of 800
    # transitions diverged, 47 with a noise floor of 0.01, and under the 5% warning
    # threshold with the floor and a target acceptance rate of 0.95.
    settings = SamplerSettings(num_warmup=300, num_samples=200, max_num_doublings=6, target_acceptance_rate=0.95)
    return PartiallySampledNetwork(sampler=HMCNetwork(NetworkPrior(noise_floor=0.01), settings))


#: The shipped PFN behind the ``pfn`` surrogate. It predicts the noise-free function, so
#: expected improvement vanishes at evaluated points of an exact objective. The noisy-target
#: ``gp-hyper`` kept EI high next to the incumbent, and the search crept along it.
PFN_CHECKPOINT = "gp-hyper-bo"


def _pfn(dim: int):
    """Load the shipped BO PFN: a GP prior with hyperpriors, up to 6 features and 60 points."""
    from probnn.pfn import PFNModel

    model = PFNModel(PFN_CHECKPOINT)
    if dim > model.pfn.config.max_features:
        raise ValueError(
            f"The pfn surrogate handles at most {model.pfn.config.max_features} inputs, got {dim}; "
            "choose another surrogate or train a PFN for more features (probnn pfn train)."
        )
    return model


#: The shipped MPNP behind the ``mpnp`` surrogate, trained on 1-d RBF Gaussian process tasks.
MPNP_CHECKPOINT = "mpnp-rbf"


def _mpnp(dim: int):
    """Load the shipped MPNP for 1-d problems: unit interval mapped to its inputs, standardised targets."""
    from probnn.np import NPModel

    if dim != 1:
        raise ValueError(
            f"The mpnp surrogate handles 1-d problems only (its network was trained on 1-d tasks), got {dim} "
            "inputs; choose a 1-d problem such as forrester, or another surrogate."
        )
    return NPModel(MPNP_CHECKPOINT, x_bounds=(0.0, 1.0), standardize=True)


SURROGATES: dict[str, Callable[[int], object] | None] = {
    "tp-nngp": _tp_nngp,
    "gp-nngp": _gp_nngp,
    "gp-matern": _gp_matern,
    "gp-rbf": _gp_rbf,
    "ibnn": _gp_nngp,
    "hmc": _hmc,
    "sghmc": _sghmc,
    "ensemble": _ensemble,
    "laplace": _laplace,
    "dkl": _dkl,
    "partial": _partial,
    "partial-hmc": _partial_hmc,
    "pfn": _pfn,
    "mpnp": _mpnp,
    "random": None,
}

SURROGATE_DESCRIPTIONS = {
    "tp-nngp": "Student-t process with a depth-3 ReLU NNGP correlation kernel (inverse-gamma last-layer variance)",
    "gp-nngp": "Gaussian process with a depth-3 ReLU NNGP correlation kernel (infinitely wide BNN)",
    "gp-matern": "Gaussian process with an ARD Matern-5/2 kernel",
    "gp-rbf": "Gaussian process with an ARD RBF kernel",
    "ibnn": "infinite-width BNN: the gp-nngp model under the name the BNN study uses",
    "hmc": "tanh BNN (50, 50) sampled by NUTS: 4 chains x 200 draws, tree depth <= 6, warm-started between iterations",
    "sghmc": "tanh BNN (50, 50) sampled by SGHMC on minibatches: 4 chains, warm-started between iterations",
    "ensemble": "deep ensemble of 5 ReLU MLPs (50, 50), equal-weight Gaussian mixture predictive",
    "laplace": "ReLU MLP (100,) with a full generalized Gauss-Newton Laplace posterior and linearised predictive",
    "dkl": "deep kernel learning: exact GP with an RBF kernel on residual tanh MLP (50, 50) features (Lipschitz bound 0.2), trained by the marginal likelihood",
    "partial": "tanh MLP (50, 50) trained on squared error with a Bayesian last layer (normal-inverse-gamma), Student-t predictive",
    "partial-hmc": "tanh MLP (50, 50) body trained on squared error; NUTS over the readout weights and the noise (4 chains x 200 draws, warm-started)",
    "pfn": "prior-fitted transformer trained on a GP prior with hyperpriors to predict the noise-free function (up to 6 inputs, 60 evaluations); bar-distribution predictive",
    "mpnp": "martingale posterior neural process trained on 1-d RBF GP tasks (1-d problems, up to 50 evaluations); mixture over generated pseudo context sets, Thompson draws from fresh ones",
    "random": "uniform random search (baseline, no model)",
}


#: Surrogates whose predictive gives marginals only, so Thompson sampling ("ts") is unavailable.
MARGINAL_ONLY = frozenset({"pfn"})


def surrogate_limit(name: str) -> int | None:
    """Return the maximum number of evaluations the named surrogate conditions on, or None without a limit."""
    key = name.lower()
    if key == "pfn":
        from probnn.pfn.network import load_pfn

        return load_pfn(PFN_CHECKPOINT).config.max_train_points
    if key == "mpnp":
        from probnn.np.network import load_np

        return int(load_np(MPNP_CHECKPOINT).limits["max_points"])
    return None


def make_surrogate(name: str, dim: int):
    """Build the named surrogate model for ``dim`` inputs scaled to the unit cube.

    Returns ``None`` for ``random``. Raises ``ValueError`` naming the choices for unknown names.
    """
    key = name.lower()
    if key not in SURROGATES:
        raise ValueError(f"Unknown surrogate {name!r}; choose one of {', '.join(SURROGATES)}.")
    factory = SURROGATES[key]
    return None if factory is None else factory(dim)
