"""The evaluation sets shipped with bae, addressable by name (`bae eval --data math500`,
`data.eval_source: math500` in a `bae train` config).

    math500   MATH500 (Lightman et al. 2023, the 500-problem MATH test subset), 500 rows
    gsm8k     GSM8K test (Cobbe et al. 2021), 1319 rows
    aime      AIME 2023-2025, I and II, 90 rows

JSON Lines with at least id, problem and answer (the gold final answer); where each comes from, how
it was converted and under which licence: SOURCES.md in this folder.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
EVAL_SETS = {"math500": "math500.jsonl", "gsm8k": "gsm8k_test.jsonl", "aime": "aime_2023_2025.jsonl"}


def path(name: str) -> Path:
    """The file of a shipped set; ValueError naming the choices for an unknown name."""
    if name not in EVAL_SETS:
        raise ValueError(f"unknown eval set {name!r}; shipped: {', '.join(EVAL_SETS)} (or give a JSON Lines file)")
    return FOLDER / EVAL_SETS[name]


def resolve(source: str | Path) -> Path:
    """A shipped set's file for its name, else the path as given."""
    return path(source) if isinstance(source, str) and source in EVAL_SETS else Path(source)
