"""Small PFNs trained once per test session on the real training loop."""

import pytest

from probnn.pfn import PFNConfig, TrainSettings, train_pfn
from probnn.priors.tasks import GPHyperTaskPrior, GPTaskPrior

TINY = dict(d_model=32, num_layers=2, num_heads=4, d_ff=64, num_buckets=64)


@pytest.fixture(scope="session")
def tiny_pfn_dir(tmp_path_factory):
    """A 1-d PFN trained for 300 steps on the fixed-hyperparameter RBF prior."""
    out = tmp_path_factory.mktemp("tiny-pfn")
    config = PFNConfig(max_features=1, max_train_points=20, **TINY)
    settings = TrainSettings(steps=300, batch_size=32, warmup_steps=30, learning_rate=3e-3)
    train_pfn(GPTaskPrior(), config, settings, out, prior_name="gp-rbf-1d", checkpoint_every=100, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_pfn(tiny_pfn_dir):
    from probnn.pfn import load_pfn

    return load_pfn(tiny_pfn_dir)


@pytest.fixture(scope="session")
def tiny_hyper_pfn(tmp_path_factory):
    """A PFN for up to 3 features and 15 points, briefly trained."""
    out = tmp_path_factory.mktemp("tiny-hyper-pfn")
    config = PFNConfig(max_features=3, max_train_points=15, **TINY)
    settings = TrainSettings(steps=60, batch_size=16, warmup_steps=10)
    return train_pfn(GPHyperTaskPrior(max_features=3), config, settings, out, prior_name=None, progress=False)
