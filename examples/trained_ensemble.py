"""Train an ensemble of wide networks with SGD and compare it with the infinite-width predictive.

Each of 256 one-hidden-layer ReLU networks of width 512 starts from its own random
initialisation, in the NTK parameterisation of probnn.kernels.nngp, and takes 50
full-batch SGD steps on squared error. GradientTrainedEnsemble predicts the distribution
of their outputs after those steps, and after training to convergence. The script prints
the largest differences in mean and standard deviation, and writes
``trained_ensemble.png`` to the folder given as the first argument, or to the current folder.
"""

import sys
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from probnn.kernels import NTK  # noqa: E402
from probnn.processes import GradientTrainedEnsemble  # noqa: E402

jax.config.update("jax_enable_x64", True)

WEIGHT_VARIANCE, BIAS_VARIANCE = 2.0, 0.1
WIDTH, NUM_MEMBERS, LEARNING_RATE, STEPS = 512, 256, 0.02, 50

X = np.linspace(-1.0, 1.0, 8)[:, None]
y = np.sin(3.0 * X[:, 0])
X_test = np.linspace(-1.5, 1.5, 61)[:, None]


def init_parameters(key):
    keys = jax.random.split(key, 4)
    shapes = {"w1": (WIDTH,), "b1": (WIDTH,), "w2": (WIDTH,), "b2": ()}
    return {name: jax.random.normal(k, shape, jnp.float32) for k, (name, shape) in zip(keys, shapes.items())}


def network(parameters, inputs):
    # The same scaling as the kernel: sqrt(sigma_w^2 / fan_in) on each weight matrix.
    hidden = np.sqrt(WEIGHT_VARIANCE) * inputs @ parameters["w1"][None] + np.sqrt(BIAS_VARIANCE) * parameters["b1"]
    readout = np.sqrt(WEIGHT_VARIANCE / WIDTH) * jax.nn.relu(hidden) @ parameters["w2"]
    return readout + np.sqrt(BIAS_VARIANCE) * parameters["b2"]


def train(key):
    parameters = init_parameters(key)
    optimizer = optax.sgd(LEARNING_RATE)
    inputs, targets = jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32)

    def loss(parameters):
        return 0.5 * jnp.sum((network(parameters, inputs) - targets) ** 2)

    def step(carry, _):
        parameters, state = carry
        updates, state = optimizer.update(jax.grad(loss)(parameters), state, parameters)
        return (optax.apply_updates(parameters, updates), state), None

    (parameters, _), _ = jax.lax.scan(step, (parameters, optimizer.init(parameters)), None, length=STEPS)
    return network(parameters, jnp.asarray(X_test, jnp.float32))


outputs = np.asarray(jax.jit(jax.vmap(train))(jax.random.split(jax.random.key(0), NUM_MEMBERS)), np.float64)

kernel = NTK(depth=1, activation="relu", weight_variance=WEIGHT_VARIANCE, bias_variance=BIAS_VARIANCE)
model = GradientTrainedEnsemble(kernel, training_time=[float(STEPS), np.inf], learning_rate=LEARNING_RATE)
predictive = model.condition(X, y).predict(X_test, latent=True)
mean, sd = np.asarray(predictive.mean), np.sqrt(np.asarray(predictive.variance))

print(f"{NUM_MEMBERS} networks of width {WIDTH} after {STEPS} SGD steps of size {LEARNING_RATE}:")
print(f"  max |ensemble mean - analytic mean| = {np.max(np.abs(outputs.mean(0) - mean[0])):.4f}")
print(f"  max |ensemble sd - analytic sd|     = {np.max(np.abs(outputs.std(0) - sd[0])):.4f}")
print(f"  Monte Carlo standard error of the mean, at most {np.max(sd[0]) / np.sqrt(NUM_MEMBERS):.4f}")
print(f"  max |analytic mean at t = {STEPS} - at t = inf| = {np.max(np.abs(mean[0] - mean[1])):.4f}")

fig, ax = plt.subplots(figsize=(7, 4))
grid = X_test[:, 0]
for index, label in enumerate([f"analytic, t = {STEPS} steps", "analytic, t = inf"]):
    ax.plot(grid, mean[index], lw=2, label=label)
    ax.fill_between(grid, mean[index] - 2 * sd[index], mean[index] + 2 * sd[index], alpha=0.2)
ax.plot(grid, outputs.mean(0), "k--", lw=1, label="ensemble mean")
ax.plot(grid, outputs.mean(0) - 2 * outputs.std(0), "k:", lw=1, label="ensemble mean +- 2 sd")
ax.plot(grid, outputs.mean(0) + 2 * outputs.std(0), "k:", lw=1)
ax.plot(X[:, 0], y, "o", color="C3", label="training data")
ax.set_xlabel("x")
ax.legend(fontsize=8)
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".")
out.mkdir(parents=True, exist_ok=True)
fig.tight_layout()
fig.savefig(out / "trained_ensemble.png", dpi=110)
print(f"wrote {out / 'trained_ensemble.png'}")
