"""Run every script in examples/ so the examples cannot drift from the API."""

import subprocess
import sys
from pathlib import Path

import pytest

# Each script starts its own Python and compiles its model: about 70 s in all on two
# cores, so the examples run with the slow tests.
pytestmark = pytest.mark.slow

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_runs(script, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip()


def test_examples_found():
    assert len(EXAMPLES) >= 2
