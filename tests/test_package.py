"""`import bae` alone gives the documented names, and stays light (checked in a fresh interpreter)."""

import subprocess
import sys

SCRIPT = r"""
import sys
import bae
heavy = sorted(m for m in ("torch", "transformers", "trl", "numpy", "bae.advantages", "bae.tasks") if m in sys.modules)
assert not heavy, f"import bae imported {heavy}"

@bae.advantages.register_baseline("zero_for_the_test")      # as the README writes it
def zero(r, group, outcome=None, **options):
    return r * 0.0

import numpy as np
r = np.array([[1.0, 0.5], [0.0, -0.5]])
A = bae.blockwise_advantages(r, np.array([0, 0]), np.array([[0, 1], [0, 0]]), baseline="zero_for_the_test")
assert A[:, 1].tolist() == [0.5, -0.5], A                  # the registered baseline was used for block 2
assert bae.tasks.get("arithmetic").num_blocks == 2
assert callable(bae.token_advantages) and bae.token_advantages is bae.objective.token_advantages
assert set(bae.__all__) <= set(dir(bae))
try:
    bae.no_such_name
except AttributeError as err:
    assert "no_such_name" in str(err)
else:
    raise AssertionError("an unknown name must raise AttributeError")
print("ok")
"""


def test_documented_names_work_after_import_bae_and_import_bae_is_light():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr
