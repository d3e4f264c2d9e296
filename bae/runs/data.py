"""Training prompts for `bae train` (and verl) from local files or Hugging Face datasets.

    from bae.runs.data import prepare
    summary = prepare(["hf:DigitalLearningGmbH/MATH-lighteval:train#answer_key=solution,answer_format=boxed",
                       "hf:BytedTsinghua-SIA/DAPO-Math-17k:train#problem_key=prompt.0.content,"
                       "answer_key=reward_model.ground_truth,problem_format=dapo"],
                      "data/math_dapo.jsonl")
    print(summary)

writes JSON Lines of {"id", "problem", "answer"} (atomically: a reader never sees half a file),
the format `bae train` (data.source) and `bae eval` (--data) read. `to_verl_parquet` turns such a
file into verl's parquet layout for the bae reward manager (docs/verl.md).

A source is

    <local file>[#options]            .jsonl / .ndjson (JSON Lines), .json (a list of objects),
                                      .parquet
    hf:<dataset id>[:split][#options] datasets.load_dataset; downloaded only when named (split
                                      defaults to "train"; slices such as train[:1000] work)

and options (comma-separated key=value) override the keyword defaults for that source only:

    problem_key=, answer_key=   where the problem / gold answer is: a column, or a dotted path into
                                nested values (reward_model.ground_truth, prompt.0.content)
    answer_format=plain|boxed   boxed: the gold answer is the content of the LAST \\boxed{...}
                                (or \\fbox{...}, or \\boxed N) of that field (MATH's solutions)
    problem_format=plain|dapo   dapo: drop DAPO-Math-17k's instruction wrapper around the problem
                                ("Solve the following math problem step by step. ..." and the
                                closing "Remember to put your answer ..." paragraph)
    config=                     the dataset configuration name (hf: only)
    limit=                      keep at most this many rows of this source
    name=                       prefix of the row ids (default: the file stem / dataset name)

Rows whose problem is missing or empty, or whose gold answer is not a non-empty string (an int is
accepted and written as its decimal string; floats, bools, None, lists are not), are skipped and
counted in the summary; a source that yields no usable row at all is an error that lists the keys
its first row has. A line that is not a JSON object is an error naming the file and line.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from bae.evaluation.generations import prompt_fields, read_records
from bae.io import atomic_path, json_lines
from bae.tasks.answers import last_boxed  # noqa: F401  (re-exported: where it used to live)

__all__ = ["DataError", "SourceSpec", "SourceStats", "PrepareSummary", "load_hub", "parse_source", "prepare",
           "read_source", "last_boxed", "strip_dapo_prompt", "to_verl_parquet"]

LOCAL_FORMATS = (".jsonl", ".ndjson", ".json", ".parquet")
OPTION_KEYS = ("problem_key", "answer_key", "answer_format", "problem_format", "config", "limit", "name")


class DataError(ValueError):
    """A problem with a data source, naming the source (and the line, for a bad line)."""


@dataclass(frozen=True)
class SourceSpec:
    """One parsed source: where the rows come from and how to read a problem and a gold answer."""

    location: str
    """A local path, or the dataset id of a hub source."""
    hub: bool = False
    split: str = "train"
    config: str | None = None
    problem_key: str = "problem"
    answer_key: str = "answer"
    answer_format: str = "plain"
    problem_format: str = "plain"
    limit: int | None = None
    name: str = ""

    def __str__(self) -> str:
        return f"hf:{self.location}:{self.split}" if self.hub else self.location


@dataclass
class SourceStats:
    source: str
    read: int = 0
    written: int = 0
    missing_problem: int = 0
    bad_answer: int = 0
    duplicates: int = 0
    over_limit: int = 0


@dataclass
class PrepareSummary:
    """What `prepare` wrote: the file, its row count, and per-source counts of skipped rows."""

    out: Path
    written: int
    sources: list[SourceStats] = field(default_factory=list)
    dropped_by_limit: int = 0

    def __str__(self) -> str:
        lines = [f"wrote {self.written} prompts to {self.out}"]
        for s in self.sources:
            lines.append(f"  {s.source}: read {s.read}, kept {s.written}, skipped {s.missing_problem} without a problem, "
                         f"{s.bad_answer} without a usable gold answer, {s.duplicates} duplicates"
                         + (f", {s.over_limit} over its limit" if s.over_limit else ""))
        if self.dropped_by_limit:
            lines.append(f"  limit: dropped {self.dropped_by_limit} rows after mixing")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Parsing a source string


def parse_source(source: str, *, problem_key: str = "problem", answer_key: str = "answer") -> SourceSpec:
    """Parse "<file>[#opts]" or "hf:<id>[:split][#opts]" (see the module docstring)."""
    base, _, opts = source.partition("#")
    options: dict[str, Any] = {"problem_key": problem_key, "answer_key": answer_key}
    for item in filter(None, (part.strip() for part in opts.split(","))):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key not in OPTION_KEYS:
            raise DataError(f"{source!r}: bad option {item!r}; options are key=value with key one of {list(OPTION_KEYS)}")
        if not value:
            raise DataError(f"{source!r}: option {key!r} is empty")
        options[key] = value
    if options.get("answer_format", "plain") not in ("plain", "boxed"):
        raise DataError(f"{source!r}: answer_format must be plain or boxed, got {options['answer_format']!r}")
    if options.get("problem_format", "plain") not in ("plain", "dapo"):
        raise DataError(f"{source!r}: problem_format must be plain or dapo, got {options['problem_format']!r}")
    if "limit" in options:
        try:
            options["limit"] = int(options["limit"])
        except ValueError:
            raise DataError(f"{source!r}: limit must be a positive integer, got {options['limit']!r}") from None
        if options["limit"] < 1:
            raise DataError(f"{source!r}: limit must be a positive integer, got {options['limit']}")
    if base.startswith("hf:"):
        dataset, _, split = base[3:].partition(":")
        if not dataset:
            raise DataError(f"{source!r}: expected hf:<dataset id>[:split]")
        options.setdefault("name", dataset.rstrip("/").rsplit("/", 1)[-1].lower())
        return SourceSpec(location=dataset, hub=True, split=split or "train", **options)
    if "config" in options:
        raise DataError(f"{source!r}: option config is for hf: sources only")
    path = Path(base)
    if path.suffix.lower() not in LOCAL_FORMATS:
        raise DataError(f"{source!r}: a local source must end in one of {list(LOCAL_FORMATS)}, or be hf:<dataset id>[:split]")
    options.setdefault("name", path.stem.lower())
    return SourceSpec(location=base, **options)


# ---------------------------------------------------------------------------------------------
# Reading rows


def load_hub(dataset: str, split: str = "train", config: str | None = None, where: str = "") -> Any:
    """datasets.load_dataset(dataset, config, split): a download the user asked for by naming the
    dataset. Any failure (offline, no such dataset or split, no network) is a DataError in one line
    naming the source, not the library's traceback (nor its retry messages: without a network,
    huggingface_hub retries for about 20 s before the error)."""
    import logging

    from datasets import load_dataset  # imports huggingface_hub, which sets up its logger

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        return load_dataset(dataset, name=config, split=split)
    except Exception as err:  # noqa: BLE001 - datasets raises many kinds (ConnectionError, DatasetNotFoundError, ...)
        first = " ".join(str(err).split()) or type(err).__name__
        offline = " (offline: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" if _offline() else ""
        raise DataError(f"{where or f'hf:{dataset}:{split}'}: cannot load the dataset{offline}: "
                        f"{type(err).__name__}: {first[:300]}") from None
    finally:
        hub_log.setLevel(level)


def _offline() -> bool:
    import os

    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def read_source(spec: SourceSpec) -> Iterator[dict]:
    """The raw rows (dicts) of one source, in its order (a local file: bae.evaluation.generations.
    read_records, the reader of every prompt file)."""
    if spec.hub:
        return iter(load_hub(spec.location, spec.split, spec.config, str(spec)))
    return (row for _, _, row in read_records(spec.location, DataError))


_DAPO_HEAD = re.compile(r"^\s*Solve the following math problem step by step\..*?\n\s*\n", re.S)
_DAPO_TAIL = re.compile(r"\n\s*\n\s*Remember to put your answer on its own line after \"Answer:\"\.?\s*$", re.S)


def strip_dapo_prompt(text: str) -> str:
    """The bare problem of a DAPO-Math-17k prompt (its instruction head and tail removed); text
    without the wrapper is returned unchanged."""
    return _DAPO_TAIL.sub("", _DAPO_HEAD.sub("", text, count=1), count=1).strip()


def _normalise(problem: str) -> str:
    return " ".join(problem.split())


# ---------------------------------------------------------------------------------------------
# prepare


def prepare(
    sources: Sequence[str | SourceSpec],
    out: str | Path,
    *,
    problem_key: str = "problem",
    answer_key: str = "answer",
    limit: int | None = None,
    seed: int | None = 0,
    dedupe: bool = True,
) -> PrepareSummary:
    """Build the training prompts: read every source in order, keep rows with a problem and a gold
    answer, drop repeated problems (whitespace-normalised text, first occurrence wins, across
    sources too) when `dedupe`, shuffle with `seed` (None keeps the sources' order), keep the first
    `limit`, and write JSON Lines of {"id", "problem", "answer"} to `out` atomically.

    `problem_key` / `answer_key` are the defaults of every source; a source's own #options win.
    Ids are "<name>-<n>" (n: the row's index in its source), so each row can be traced back.
    """
    from bae.evaluation.generations import atomic_write_text

    if not sources:
        raise DataError("no sources given")
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive integer, got {limit}")
    specs = [s if isinstance(s, SourceSpec) else parse_source(s, problem_key=problem_key, answer_key=answer_key) for s in sources]
    names = [s.name for s in specs]
    prefixes = [n if names.count(n) == 1 else f"{n}{i + 1}" for i, n in enumerate(names)]  # unique id prefixes

    rows: list[dict] = []
    seen: set[str] = set()
    summary = PrepareSummary(Path(out), 0)
    for spec, prefix in zip(specs, prefixes):
        stats = SourceStats(str(spec))
        summary.sources.append(stats)
        first_keys: list[str] | None = None
        usable = 0
        for index, raw in enumerate(read_source(spec)):
            stats.read += 1
            if first_keys is None:
                first_keys = sorted(raw) if isinstance(raw, dict) else []
            problem, answer = prompt_fields(raw, spec.problem_key, spec.answer_key, spec.answer_format)
            if problem is None:
                stats.missing_problem += 1
                continue
            if spec.problem_format == "dapo":
                problem = strip_dapo_prompt(problem)
            if answer is None:
                stats.bad_answer += 1
                continue
            usable += 1
            key = _normalise(problem)
            if dedupe and key in seen:
                stats.duplicates += 1
                continue
            if spec.limit is not None and stats.written >= spec.limit:
                stats.over_limit += 1
                continue
            seen.add(key)
            rows.append({"id": f"{prefix}-{index}", "problem": problem, "answer": answer})
            stats.written += 1
        if usable == 0:
            where = "is empty" if stats.read == 0 else (
                f"has no row with a non-empty {spec.problem_key!r} and a usable {spec.answer_key!r} "
                f"(answer_format {spec.answer_format}); keys of its first row: {first_keys}. "
                "Choose the fields with #problem_key=...,answer_key=...")
            raise DataError(f"{spec}: {where}")
    if seed is not None:
        random.Random(seed).shuffle(rows)
    if limit is not None and len(rows) > limit:
        summary.dropped_by_limit = len(rows) - limit
        rows = rows[:limit]
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    summary.written = len(rows)
    return summary


def to_verl_parquet(rows: str | Path | Iterable[dict], out: str | Path, *, task: str = "self_confidence",
                    task_options: dict[str, Any] | None = None, split: str = "train") -> int:
    """Write prompts ({"id", "problem", "answer"}: a prepared JSON Lines file or the rows) in verl's
    parquet layout for bae's reward manager (docs/verl.md): data_source = the bae task name,
    prompt = the task's chat messages (system prompt + problem), ability = "math",
    reward_model = {style: "rule", ground_truth: the gold answer}, extra_info = {index, id, split,
    and bae_task_options when given (a parquet struct, which verl hands back as a dict)}.
    Written atomically (a temporary file, then rename). Returns the number of rows.
    """

    import pyarrow as pa
    import pyarrow.parquet as pq

    from bae import tasks

    the_task = tasks.get(task, **(task_options or {}))
    if isinstance(rows, (str, Path)):
        rows = [row for _, row in json_lines(Path(rows), DataError)]
    records = []
    for i, r in enumerate(rows):
        extra: dict[str, Any] = {"index": i, "id": str(r["id"]), "split": split}
        if task_options:
            extra["bae_task_options"] = dict(task_options)
        records.append({"data_source": task, "prompt": the_task.format_prompt(r["problem"]), "ability": "math",
                        "reward_model": {"style": "rule", "ground_truth": str(r["answer"])}, "extra_info": extra})
    if not records:
        raise DataError("no rows to write")
    with atomic_path(out) as tmp:
        pq.write_table(pa.Table.from_pylist(records), tmp)
    return len(records)
