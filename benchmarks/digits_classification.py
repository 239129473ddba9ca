"""Accuracy, NLL and ECE of NNGP classifiers on clean and corrupted digits.

Four models share one NNGP kernel. Two regress on one-hot labels in closed form: a
Gaussian process (``s`` fixed, kernel variance fitted) and a Student-t process (an
inverse-gamma prior on the last-layer variance ``s``). Two are sparse variational softmax
classifiers, one with ``s = 1`` and one with an inverse-gamma ``q(s)``. The data are scikit-learn's
``load_digits`` (pixels divided by 16), split 70/30 with ``--seed``. Every model is scored
on the clean test images and on two corrupted copies: additive Gaussian noise of standard
deviation ``--noise-std`` on every pixel, and a rotation by ``--rotation`` degrees. The
closed forms fit their hyperparameters with one L-BFGS start of ``--max-iterations``
iterations. The script prints a markdown table, whose ``fit s`` column is the wall time of
``fit`` in seconds, compilation included.

Example::

    python benchmarks/digits_classification.py --seed 0
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import numpyro.distributions as dist
from scipy import ndimage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from probnn.kernels import NNGP
from probnn.metrics import classification_metrics
from probnn.processes.classification import OneHotRegressionClassifier, SparseVariationalClassifier


def load_split(seed: int):
    X, labels = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, labels, test_size=0.3, random_state=seed, stratify=labels)


def corrupted_sets(X_test, seed: int, noise_std: float, rotation: float) -> dict[str, np.ndarray]:
    """Return the clean test inputs and the noisy and rotated copies, keyed by name."""
    noisy = X_test + noise_std * np.random.default_rng(seed).normal(size=X_test.shape)
    # Bilinear rotation about the image centre; pixels rotated in from outside are 0.
    rotated = np.stack(
        [ndimage.rotate(x.reshape(8, 8), rotation, reshape=False, order=1).ravel() for x in X_test]
    )
    return {
        "clean": X_test,
        f"noise {noise_std:g}": noisy,
        f"rotated {rotation:g} deg": rotated,
    }


def build_models(args) -> dict:
    kernel = NNGP(depth=args.depth)
    closed_form = dict(num_restarts=1, max_iterations=args.max_iterations)
    sparse = dict(num_inducing=args.num_inducing, num_steps=args.num_steps, learning_rate=args.learning_rate)
    return {
        "closed form, Gaussian (NNGP)": OneHotRegressionClassifier(kernel, None, **closed_form),
        "closed form, inverse gamma": OneHotRegressionClassifier(
            kernel, dist.InverseGamma(args.alpha, args.beta), **closed_form
        ),
        "sparse variational, Gaussian": SparseVariationalClassifier(kernel, None, **sparse),
        "sparse variational, inverse gamma": SparseVariationalClassifier(
            kernel, dist.InverseGamma(args.a0, args.b0), **sparse
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the corruption and the fits")
    parser.add_argument("--depth", type=int, default=2, help="hidden layers of the NNGP kernel")
    parser.add_argument("--noise-std", type=float, default=0.5, help="noise standard deviation, pixels in [0, 1]")
    parser.add_argument("--rotation", type=float, default=30.0, help="rotation of the test images in degrees")
    parser.add_argument("--max-iterations", type=int, default=50, help="L-BFGS iterations of the closed forms")
    parser.add_argument("--alpha", type=float, default=3.0, help="initial inverse-gamma shape of the closed form")
    parser.add_argument("--beta", type=float, default=2.0, help="initial inverse-gamma scale of the closed form")
    parser.add_argument("--num-inducing", type=int, default=100, help="inducing inputs of the sparse models")
    parser.add_argument("--num-steps", type=int, default=2000, help="Adam steps of the sparse models")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="Adam step size of the sparse models")
    parser.add_argument("--a0", type=float, default=2.0, help="shape of the sparse model's prior on s")
    parser.add_argument("--b0", type=float, default=2.0, help="scale of the sparse model's prior on s")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)

    X_train, X_test, y_train, y_test = load_split(args.seed)
    test_sets = corrupted_sets(X_test, args.seed, args.noise_std, args.rotation)
    rows = []
    notes = []
    for name, model in build_models(args).items():
        start = time.perf_counter()
        posterior = model.fit(X_train, y_train, key=jax.random.key(args.seed))
        seconds = time.perf_counter() - start
        for data_name, X in test_sets.items():
            metrics = classification_metrics(posterior.predict_proba(X), y_test)
            rows.append((name, data_name, metrics, seconds))
        scale = posterior.scale_posterior()
        if scale is not None:
            notes.append(f"{name}: posterior of s has mean {float(scale.mean):.3g} and sd {float(np.sqrt(scale.variance)):.3g}")

    print(
        f"Digits, {len(y_train)} training and {len(y_test)} test images (split seed {args.seed}), "
        f"NNGP depth {args.depth}\n"
    )
    print("| model | test data | accuracy | NLL | ECE | fit s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, data_name, metrics, seconds in rows:
        print(
            f"| {name} | {data_name} | {metrics['accuracy']:.4f} | {metrics['nll']:.4f} | "
            f"{metrics['ece']:.4f} | {seconds:.0f} |"
        )
    print()
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
