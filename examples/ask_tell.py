"""Minimise Branin with the ask/tell loop and a Student-t process surrogate.

The journal goes to the folder given as the first argument (default: a temporary folder),
so rerunning the script resumes the same run instead of starting over.
"""

import sys
import tempfile
from pathlib import Path

import jax

from probnn.bo import BayesianOptimization, get_problem

jax.config.update("jax_enable_x64", True)

folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
journal = folder / "journal.jsonl"
problem = get_problem("branin")
if journal.exists():
    loop = BayesianOptimization.resume(journal)
else:
    loop = BayesianOptimization(problem.bounds, surrogate="tp-nngp", num_initial=6, seed=0, journal=journal)

while loop.num_evaluations < 16:
    x = loop.ask()
    y = problem(x)
    loop.tell(x, y)
    print(f"evaluation {loop.num_evaluations:2d}: f({x.round(3).tolist()}) = {y:.4f}, best {loop.best_value:.4f}")

print(f"simple regret after {loop.num_evaluations} evaluations: {loop.best_value - problem.optimum:.4g}")
