"""Shared pytest configuration for the probnn test suite."""

import os

import jax
import pytest


@pytest.fixture(autouse=True, scope="session")
def enable_x64():
    """Run every test in float64, because probnn leaves JAX's precision to the caller."""
    jax.config.update("jax_enable_x64", True)
    yield


# The command line keeps a persistent compilation cache; tests that call it in-process must
# not write into the user's cache folder.
os.environ.setdefault("PROBNN_CACHE_DIR", "")
