"""Shared pytest configuration for the probnn test suite."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="session")
def enable_x64():
    """Run every test in float64, because probnn leaves JAX's precision to the caller."""
    jax.config.update("jax_enable_x64", True)
    yield
