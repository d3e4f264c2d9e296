"""bae: Blockwise Advantage Estimation and the Outcome-Conditioned Baseline for multi-objective RL
of language models (Pavlenko et al., arXiv 2602.10231).

    from bae.advantages import blockwise_advantages      # r[N, K], group ids, o[N, K] -> A[N, K]
    from bae.objective import token_advantages            # A[N, K], token block ids -> A[N, T]
    from bae import tasks                                 # tasks.get("self_confidence").score(text, gold)

After a plain ``import bae`` the documented names work too (``bae.advantages.register_baseline``,
``bae.tasks.get``, ``bae.blockwise_advantages``, ``bae.token_advantages``, ...): they are imported
on first use (PEP 562), so ``import bae`` itself stays light (no torch, no transformers), as a
worker process that only needs the verifier imports the package too.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

SUBMODULES = ("advantages", "batch", "blocks", "evaluation", "fidelity", "io", "metrics", "objective", "paper",
              "rewards", "tasks")
"""The public submodules, each imported on first access as ``bae.<name>``."""

FUNCTIONS = {"blockwise_advantages": "bae.advantages", "token_advantages": "bae.objective"}
"""Public functions reachable as ``bae.<name>``, each from its module."""

__all__ = ["__version__", *SUBMODULES, *FUNCTIONS]


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"bae.{name}")  # also binds it as an attribute of the package
    if name in FUNCTIONS:
        value = getattr(importlib.import_module(FUNCTIONS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
