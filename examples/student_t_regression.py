"""Fit a Gaussian process and a Student-t process with an NNGP kernel to data with outliers.

Writes ``student_t_regression.png`` (predictive mean and 95% bands of both models) to the
folder given as the first argument, or to the current folder.
"""

import sys
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import probnn  # noqa: E402
from probnn.kernels import NNGP  # noqa: E402

jax.config.update("jax_enable_x64", True)

rng = np.random.default_rng(0)
X = np.sort(rng.uniform(-2.0, 2.0, size=40))
y = np.sin(2.0 * X) + 0.1 * rng.normal(size=X.size)
y[[5, 20, 31]] += np.array([2.5, -3.0, 2.0])  # gross outliers
X_test = np.linspace(-2.5, 2.5, 200)
y_test = np.sin(2.0 * X_test)

kernel = NNGP(depth=3, activation="relu")
models = {
    "Gaussian process (NNGP)": probnn.GaussianProcess(kernel),
    "Student-t process (NNGP)": probnn.StudentTProcess(kernel),
}
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, (name, model) in zip(axes, models.items()):
    posterior = model.fit(X, y, key=jax.random.key(0))
    predictive = posterior.predict(X_test)
    lower, upper = predictive.icdf(0.025), predictive.icdf(0.975)
    nll = -float(np.mean(predictive.log_prob(y_test)))
    print(f"{name}: test NLL against the noise-free function {nll:.3f}")
    ax.fill_between(X_test, lower, upper, alpha=0.3, label="95% predictive interval")
    ax.plot(X_test, predictive.mean, lw=2, label="predictive mean")
    ax.plot(X_test, y_test, "k--", lw=1, label="true function")
    ax.plot(X, y, "o", ms=4, color="C3", label="data")
    ax.set_title(name)
    ax.set_xlabel("x")
axes[0].legend(fontsize=8)
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
out.mkdir(parents=True, exist_ok=True)
fig.tight_layout()
fig.savefig(out / "student_t_regression.png", dpi=110)
print(f"wrote {out / 'student_t_regression.png'}")
