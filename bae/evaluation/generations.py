"""Reading and writing the two JSON Lines inputs of ``bae eval``.

Generations file (any system's outputs, scored the same way): one JSON object per line with
  prompt_id   string or integer (integers are turned into strings), the prompt the sample answers;
  completion  string, the model's text (data only: it is parsed, never evaluated);
  gold        string, the gold final answer (the same on every line of one prompt_id; a number
              is turned into its string);
  problem     optional string, the problem text.
Other keys are kept but not used. Blank lines are skipped. Samples of one prompt need not be
adjacent; prompts keep the order of their first line.

Eval set (what a model is sampled on): one JSON object per line with ``problem`` and ``answer``
(non-empty strings; a numeric answer is turned into its string) and optional ``id`` (string or
integer; default "row-N" with N the line number).

Any malformed line raises ``InputError`` whose message is "PATH:LINE: what is wrong".
"""

from __future__ import annotations

from bae.io import atomic_write_text, json_lines  # noqa: F401  (atomic_write_text: re-exported)

import json
import os
from pathlib import Path
from typing import Iterable, Iterator


class InputError(ValueError):
    """A malformed input line; the message names the file and the 1-based line number."""


def _lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; InputError names a bad line."""
    return json_lines(path, InputError)


def _text(row: dict, key: str, where: str, *, numbers: bool = False, optional: bool = False) -> str | None:
    if key not in row:
        if optional:
            return None
        raise InputError(f"{where}: missing key {key!r} (keys present: {sorted(row)})")
    value = row[key]
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise InputError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def read_generations(path: str | os.PathLike) -> list[dict]:
    """Read and validate a generations file; returns its rows with ``prompt_id`` as a string.

    InputError names the line for: invalid JSON, a non-object line, a missing or non-string
    key (prompt_id may be an integer, gold a number), an empty gold, a gold that differs from an earlier line
    of the same prompt_id, or a file without any row.
    """
    path = Path(path)
    rows: list[dict] = []
    gold_of: dict[str, tuple[str, int]] = {}
    for number, row in _lines(path):
        where = f"{path}:{number}"
        pid = row.get("prompt_id")
        if isinstance(pid, int) and not isinstance(pid, bool):
            row = {**row, "prompt_id": str(pid)}
        _text(row, "prompt_id", where)
        _text(row, "completion", where)
        gold = _text(row, "gold", where, numbers=True)
        row = {**row, "gold": gold}
        _text(row, "problem", where, optional=True)
        if not gold.strip():
            raise InputError(f"{where}: 'gold' is empty")
        first = gold_of.setdefault(row["prompt_id"], (gold, number))
        if first[0] != gold:
            raise InputError(
                f"{where}: gold {gold!r} differs from {first[0]!r} given for prompt_id "
                f"{row['prompt_id']!r} on line {first[1]}"
            )
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no generations (the file is empty)")
    return rows


def read_eval_set(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """Read an eval set (problem, answer, optional id); returns rows {"id", "problem", "answer"}.

    ``path`` is a JSON Lines file or the name of a set shipped with bae (bae.evaluation.sets:
    math500, gsm8k, aime).

    ``limit`` keeps the first ``limit`` rows. InputError names the line for invalid JSON, a
    missing, non-string or empty problem/answer, or a repeated id; and the file for no rows.
    """
    from bae.evaluation.sets import resolve

    path = resolve(path)
    rows: list[dict] = []
    seen: dict[str, int] = {}
    for number, row in _lines(path):
        if limit is not None and len(rows) >= limit:
            break
        where = f"{path}:{number}"
        problem = _text(row, "problem", where)
        answer = _text(row, "answer", where, numbers=True)
        row_id = _text(row, "id", where, numbers=True, optional=True) or f"row-{number}"
        for key, value in (("problem", problem), ("answer", answer)):
            if not value.strip():
                raise InputError(f"{where}: {key!r} is empty")
        if row_id in seen:
            raise InputError(f"{where}: id {row_id!r} repeats line {seen[row_id]}")
        seen[row_id] = number
        rows.append({"id": row_id, "problem": problem, "answer": answer})
    if not rows:
        raise InputError(f"{path}: no rows (the file is empty)")
    return rows


def write_generations(rows: Iterable[dict], path: str | os.PathLike) -> None:
    """Write generation rows as JSON Lines (atomically)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)


def group_by_prompt(rows: Iterable[dict]) -> dict[str, list[dict]]:
    """Rows grouped by prompt_id, prompts in order of first appearance, samples in file order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["prompt_id"], []).append(row)
    return groups
