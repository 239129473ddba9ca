"""Adapters that let probnn models work inside other libraries' tools.

- :mod:`probnn.integrations.sklearn`: scikit-learn regressors.
"""
