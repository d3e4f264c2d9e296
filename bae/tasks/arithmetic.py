"""The synthetic arithmetic task of the embedded default: integer problems with difficulty levels.

Verified by exact match (bae.rewards.exact_match), in the self-confidence block format
(task "arithmetic") or the two-attempt format (task "arithmetic_two_attempt").

Levels: 1 = one-digit sums, 2 = two-digit sums and differences, 3 = two-digit by one-digit
products, 4 = three-term expressions such as 23 + 7 * 4.
"""

from __future__ import annotations

import random

LEVELS = (1, 2, 3, 4)


def _problem(rng: random.Random, level: int) -> tuple[str, int]:
    if level == 1:
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return f"{a} + {b}", a + b
    if level == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return (f"{a} + {b}", a + b) if rng.random() < 0.5 else (f"{max(a, b)} - {min(a, b)}", abs(a - b))
    if level == 3:
        a, b = rng.randint(10, 99), rng.randint(2, 9)
        return f"{a} * {b}", a * b
    if level == 4:
        a, b, c = rng.randint(10, 99), rng.randint(2, 9), rng.randint(2, 9)
        return f"{a} + {b} * {c}", a + b * c
    raise ValueError(f"unknown arithmetic level {level!r}; levels are {LEVELS}")


def generate(n: int, seed: int = 0, levels: tuple[int, ...] = (1, 2, 3)) -> list[dict]:
    """n problems, levels drawn uniformly from `levels`, reproducible from `seed`.

    Rows: {"id": "arith-<seed>-<i>", "problem": "What is 12 + 7?", "answer": "19", "level": 2}.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for level in levels:
        if level not in LEVELS:
            raise ValueError(f"unknown arithmetic level {level!r}; levels are {LEVELS}")
    if not levels:
        raise ValueError("levels must not be empty")
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        level = rng.choice(levels)
        expression, value = _problem(rng, level)
        rows.append({"id": f"arith-{seed}-{i}", "problem": f"What is {expression}?", "answer": str(value), "level": level})
    return rows
