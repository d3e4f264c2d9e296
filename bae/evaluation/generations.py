"""Reading and writing the two JSON Lines inputs of ``bae eval``.

Generations file (any system's outputs, scored the same way): one JSON object per line with
  prompt_id   string or integer (integers are turned into strings), the prompt the sample answers;
  completion  string, the model's text (data only: it is parsed, never evaluated);
  gold        string, the gold final answer (the same on every line of one prompt_id; a number
              is turned into its string);
  problem     optional string, the problem text;
  confidence  optional number, the system's confidence that this completion is correct, from
              outside the text (a verifier, a reward model, token probabilities). Without a
              transform it must be a probability in [0, 1]; with ``confidence_transform``
              ("sigmoid": any real score such as a reward model's logit, 1 / (1 + e^-x);
              "percent": a number in [0, 100], divided by 100) it is mapped first. null: none
              for that line. A given confidence replaces the one stated in the text, if any.
              Nothing is guessed: 3.5 is not read as 3.5 %, and -2 does not become 0.
Other keys are kept but not used. Blank lines are skipped. Samples of one prompt need not be
adjacent; prompts keep the order of their first line.

Prompts (an eval set, what a model is sampled on; `bae train`'s data.source; what `bae
prepare-data` reads): rows with a problem, a gold answer and an optional ``id``, read by
``read_prompts`` (strict: training and evaluation) or ``prompt_fields`` (per row, lenient:
prepare-data skips and counts unusable rows) from a local file of any supported format
(``read_records``):
  .jsonl / .ndjson (and any other suffix)  JSON Lines, one object per line;
  .json                                    a list of objects, {"data": [...]}, one object, or
                                           JSON Lines under a .json name;
  .parquet                                 a table, one row per record (pyarrow).
The problem is at ``problem_key`` and the answer at ``answer_key`` (default "problem" and
"answer"; a dotted path reaches into nested values: reward_model.ground_truth, prompt.0.content).
A problem is a non-empty string; an answer a non-empty string or an integer (written as its
decimal string; floats, booleans, null and lists are refused: 0.5 or 3.0 from a float column is
ambiguous as text); ``answer_format="boxed"`` takes the content of the field's last \\boxed{}.
The id (string or integer) defaults to "row-N", N the line (JSON Lines) or the 1-based row.

Any malformed line raises ``InputError`` whose message is "PATH:LINE: what is wrong".
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Iterator

from bae.io import atomic_write_text, json_lines  # noqa: F401  (atomic_write_text: re-exported)

CONFIDENCE_TRANSFORMS = ("none", "sigmoid", "percent")
"""How a generations row's ``confidence`` becomes a probability: "none" (it is one, in [0, 1]),
"sigmoid" (a real score, 1 / (1 + e^-x)), "percent" (a number in [0, 100], / 100)."""


class InputError(ValueError):
    """A malformed input line; the message names the file and the 1-based line number."""


def _lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; InputError names a bad line."""
    return json_lines(path, InputError)


RECORD_FORMATS = (".jsonl", ".ndjson", ".json", ".parquet")


def read_records(path: str | os.PathLike, error: type[Exception] = InputError) -> Iterator[tuple[str, int, dict]]:
    """(where, number, row) for every record of a local file: JSON Lines (.jsonl, .ndjson, any other
    suffix), JSON (.json: a list of objects, {"data": [...]}, one object, or JSON Lines), parquet.
    ``where`` names the record ("PATH:LINE", "PATH: item I", "PATH: row I") and ``number`` is its
    1-based line or row; ``error`` names the file and record of anything that is not an object."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow comes with datasets
            raise error(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow's ArrowInvalid and friends: not a parquet file
            raise error(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from None
        for i, row in enumerate(table.to_pylist(), start=1):
            yield f"{path}: row {i}", i, row
        return
    if suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # else: one object per line under a .json name
                raise error(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        else:
            if isinstance(data, dict):  # {"data": [...]} or a single object
                data = data.get("data", [data])
            if not isinstance(data, list):
                raise error(f"{path}: expected a list of objects, got {type(data).__name__}")
            for i, row in enumerate(data, start=1):
                if not isinstance(row, dict):
                    raise error(f"{path}: item {i} is a {type(row).__name__}, not an object")
                yield f"{path}: item {i}", i, row
            return
    for number, row in json_lines(path, error):
        yield f"{path}:{number}", number, row


MISSING = object()
"""What ``field_of`` returns for a key that is not there."""


def field_of(row: object, key: str) -> object:
    """row[key], where key may be a dotted path into nested dicts and lists (prompt.0.content);
    MISSING when it is not there. A key holding dots that is itself a column wins."""
    if isinstance(row, dict) and key in row:
        return row[key]
    value = row
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, (list, tuple)) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def answer_text(value: object, answer_format: str = "plain") -> str | None:
    """The gold answer of a field: a non-empty string (stripped) or an integer as its decimal
    string; with answer_format "boxed" the content of the text's last \\boxed{}. None for
    anything else (floats, booleans, null, lists, an empty string, no box)."""
    from bae.tasks.answers import last_boxed

    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return None
    if answer_format == "boxed":
        value = last_boxed(value)
        if value is None:
            return None
    return value.strip() or None


def prompt_fields(row: dict, problem_key: str = "problem", answer_key: str = "answer",
                  answer_format: str = "plain") -> tuple[str | None, str | None]:
    """(problem, answer) of one row, each None when missing or unusable (see the module docstring):
    the lenient reading of `bae prepare-data`, which skips and counts such rows."""
    problem = field_of(row, problem_key)
    problem = problem.strip() if isinstance(problem, str) and problem.strip() else None
    return problem, answer_text(field_of(row, answer_key), answer_format)


def prompt_rows(records: Iterable[tuple[str, int, dict]], *, problem_key: str = "problem", answer_key: str = "answer",
                limit: int | None = None, source: str = "") -> list[dict]:
    """Rows {"id", "problem", "answer"} from (where, number, row) records, strictly: InputError
    names the record of a missing or unusable problem / answer (with the keys present) or a
    repeated id, and ``source`` of no rows at all. ``limit`` keeps the first rows."""
    rows: list[dict] = []
    seen: dict[str, str] = {}
    for where, number, row in records:
        if limit is not None and len(rows) >= limit:
            break
        for key in (problem_key, answer_key):
            if field_of(row, key) is MISSING:
                raise InputError(f"{where}: missing key {key!r} (keys present: {sorted(row)})")
        problem, answer = prompt_fields(row, problem_key, answer_key)
        if problem is None:
            raise InputError(f"{where}: {problem_key!r} must be a non-empty string, got {field_of(row, problem_key)!r}")
        if answer is None:
            value = field_of(row, answer_key)
            raise InputError(f"{where}: {answer_key!r} must be a non-empty string or an integer, got "
                             f"{type(value).__name__} {value!r}")
        row_id = row.get("id")
        if isinstance(row_id, int) and not isinstance(row_id, bool):
            row_id = str(row_id)
        if row_id is not None and not isinstance(row_id, str):
            raise InputError(f"{where}: 'id' must be a string or an integer, got {type(row_id).__name__}")
        row_id = row_id or f"row-{number}"
        if row_id in seen:
            raise InputError(f"{where}: id {row_id!r} repeats {seen[row_id]}")
        seen[row_id] = f"line {number}" if where.endswith(f":{number}") else where.split(": ", 1)[-1]
        rows.append({"id": row_id, "problem": problem, "answer": answer})
    if not rows:
        raise InputError(f"{source}: no rows (the file is empty)")
    return rows


def read_prompts(path: str | os.PathLike, *, problem_key: str = "problem", answer_key: str = "answer",
                 limit: int | None = None) -> list[dict]:
    """Prompts {"id", "problem", "answer"} from a local file of any supported format or the name
    of a set shipped with bae (math500, gsm8k, aime), strictly (``prompt_rows``): the one reader of
    `bae eval --data`, `bae train`'s data.source / data.eval_source and `bae fidelity --data`."""
    from bae.evaluation.sets import resolve

    path = resolve(path)
    return prompt_rows(read_records(path), problem_key=problem_key, answer_key=answer_key, limit=limit,
                       source=str(path))


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


def confidence_from(value, transform: str = "none") -> float | None:
    """A probability in [0, 1] from a confidence given outside the text (None stays None).

    transform "none": ``value`` must already be a probability in [0, 1]; "sigmoid": any finite
    real (a reward model's score or logit), mapped by 1 / (1 + e^-x); "percent": a number in
    [0, 100], divided by 100. ValueError says why for anything else (not a number, NaN, out of
    range): a raw score is never guessed to be a percentage, nor clipped into [0, 1]."""
    if transform not in CONFIDENCE_TRANSFORMS:
        raise ValueError(f"unknown confidence transform {transform!r}; choose one of {', '.join(CONFIDENCE_TRANSFORMS)}")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"'confidence' must be a number (or null), got {type(value).__name__} {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"'confidence' must be a finite number, got {value!r}")
    if transform == "sigmoid":
        return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))
    if transform == "percent":
        if not 0.0 <= x <= 100.0:
            raise ValueError(f"'confidence' {value!r} is not a percentage in [0, 100] (confidence transform percent)")
        return x / 100.0
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"'confidence' {value!r} is not a probability in [0, 1]; for a raw score (a reward model's, "
                         "say) give --confidence-transform sigmoid, for a percentage --confidence-transform percent")
    return x


def read_generations(path: str | os.PathLike, confidence_transform: str = "none") -> list[dict]:
    """Read and validate a generations file; returns its rows with ``prompt_id`` as a string and
    ``confidence``, where given, as a probability (``confidence_from`` with ``confidence_transform``).

    InputError names the line for: invalid JSON, a non-object line, a missing or non-string
    key (prompt_id may be an integer, gold a number), an empty gold, a gold that differs from an earlier line
    of the same prompt_id, a confidence that is not a number or out of range, or a file without
    any row; and the file when a transform is asked for but no line has a confidence.
    """
    if confidence_transform not in CONFIDENCE_TRANSFORMS:
        raise InputError(f"unknown confidence transform {confidence_transform!r}; "
                         f"choose one of {', '.join(CONFIDENCE_TRANSFORMS)}")
    path = Path(path)
    rows: list[dict] = []
    gold_of: dict[str, tuple[str, int]] = {}
    given = 0
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
        if "confidence" in row:
            try:
                row["confidence"] = confidence_from(row["confidence"], confidence_transform)
            except ValueError as err:
                raise InputError(f"{where}: {err}") from None
            given += row["confidence"] is not None
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no generations (the file is empty)")
    if confidence_transform != "none" and not given:
        raise InputError(f"{path}: confidence transform {confidence_transform!r} given, but no line has a 'confidence'")
    return rows


def read_eval_set(path: str | os.PathLike, limit: int | None = None) -> list[dict]:
    """An eval set (problem, answer, optional id): ``read_prompts`` with the default keys;
    ``path`` is a local file or the name of a set shipped with bae (math500, gsm8k, aime)."""
    return read_prompts(path, limit=limit)


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
