"""bae.runs.data.prepare: training prompts from local files (offline; subsets of MATH500 in tmp)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bae.runs.data import DataError, last_boxed, parse_source, prepare, strip_dapo_prompt, to_verl_parquet
from bae.evaluation.generations import read_eval_set
from bae.evaluation.sets import path as eval_set

MATH500 = eval_set("math500")
ROWS = [json.loads(line) for line in MATH500.read_text().splitlines()[:40]]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_source_round_trips_into_what_bae_train_reads(tmp_path):
    src = write_jsonl(tmp_path / "m.jsonl", ROWS[:10])
    out = tmp_path / "out" / "train.jsonl"
    summary = prepare([str(src)], out, seed=None)
    rows = read(out)
    assert [set(r) for r in rows] == [{"id", "problem", "answer"}] * 10
    assert [(r["problem"], r["answer"]) for r in rows] == [(r["problem"], r["answer"]) for r in ROWS[:10]]
    assert [r["id"] for r in rows] == [f"m-{i}" for i in range(10)]
    assert summary.written == 10 and summary.sources[0].read == 10
    assert read_eval_set(out) == rows  # the format of data.source / --data
    assert "wrote 10 prompts" in str(summary)


def test_malformed_line_is_an_error_naming_file_and_line(tmp_path):
    src = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) for r in ROWS[:3]]
    lines.insert(2, '{"problem": "x", "answer": ')  # line 3
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON"):
        prepare([str(src)], out)
    assert not out.exists()  # nothing half-written
    src.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: expected a JSON object, got list"):
        prepare([str(src)], out)


def test_rows_without_a_usable_answer_or_problem_are_skipped_and_counted(tmp_path):
    rows = [dict(r) for r in ROWS[:8]]
    rows[0]["answer"] = ""
    rows[1]["answer"] = "   "
    rows[2]["answer"] = None
    del rows[3]["answer"]
    rows[4]["answer"] = 42  # an int is a usable answer, written as "42"
    rows[5]["answer"] = [1, 2]
    rows[6]["problem"] = ""
    src = write_jsonl(tmp_path / "m.jsonl", rows)
    summary = prepare([str(src)], tmp_path / "out.jsonl", seed=None)
    stats = summary.sources[0]
    assert (stats.read, stats.written, stats.bad_answer, stats.missing_problem) == (8, 2, 5, 1)
    assert [r["answer"] for r in read(tmp_path / "out.jsonl")] == ["42", ROWS[7]["answer"]]
    assert "5 without a usable gold answer" in str(summary)


def test_a_source_with_no_usable_row_names_its_keys(tmp_path):
    src = write_jsonl(tmp_path / "q.jsonl", [{"question": r["problem"], "final": r["answer"]} for r in ROWS[:3]])
    with pytest.raises(DataError, match=r"keys of its first row: \['final', 'question'\]"):
        prepare([str(src)], tmp_path / "out.jsonl")
    summary = prepare([f"{src}#problem_key=question,answer_key=final"], tmp_path / "out.jsonl", seed=None)
    assert summary.written == 3
    summary = prepare([str(src)], tmp_path / "out.jsonl", problem_key="question", answer_key="final", seed=None)
    assert summary.written == 3


def test_dedupe_across_and_within_sources(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", ROWS[:10] + [ROWS[0]])  # repeats itself once
    b_rows = [dict(r) for r in ROWS[5:15]]
    b_rows[0]["problem"] = "  " + b_rows[0]["problem"].replace(" ", "   ") + "\n"  # same text, other spacing
    b = write_jsonl(tmp_path / "b.jsonl", b_rows)
    summary = prepare([str(a), str(b)], tmp_path / "out.jsonl", seed=None)
    rows = read(tmp_path / "out.jsonl")
    assert len(rows) == 15 and summary.written == 15
    assert [s.duplicates for s in summary.sources] == [1, 5]
    assert len({" ".join(r["problem"].split()) for r in rows}) == 15
    assert rows[0]["id"] == "a-0" and rows[10]["id"] == "b-5"  # first occurrence wins; ids trace the source row
    kept = prepare([str(a), str(b)], tmp_path / "all.jsonl", seed=None, dedupe=False)
    assert kept.written == 21 and len({r["id"] for r in read(tmp_path / "all.jsonl")}) == 21


def test_limit_seed_and_mixing_two_sources(tmp_path):
    a = write_jsonl(tmp_path / "math.jsonl", ROWS[:20])
    b = write_jsonl(tmp_path / "other.json", [])
    b.write_text(json.dumps([{"question": r["problem"], "gold": {"value": r["answer"]}} for r in ROWS[20:40]]))
    sources = [str(a), f"{b}#problem_key=question,answer_key=gold.value"]
    full = prepare(sources, tmp_path / "full.jsonl", seed=None)
    assert full.written == 40 and [s.written for s in full.sources] == [20, 20]
    ids = [r["id"] for r in read(tmp_path / "full.jsonl")]
    assert ids[:2] == ["math-0", "math-1"] and ids[20:22] == ["other-0", "other-1"]

    one = prepare(sources, tmp_path / "s1.jsonl", seed=1, limit=12)
    again = prepare(sources, tmp_path / "s1b.jsonl", seed=1, limit=12)
    other = prepare(sources, tmp_path / "s2.jsonl", seed=2, limit=12)
    assert one.written == 12 and one.dropped_by_limit == 28
    assert read(tmp_path / "s1.jsonl") == read(tmp_path / "s1b.jsonl")  # same seed, same file
    assert read(tmp_path / "s1.jsonl") != read(tmp_path / "s2.jsonl")
    mixed = {r["id"].split("-")[0] for r in read(tmp_path / "s1.jsonl")}
    assert mixed == {"math", "other"}  # shuffled across the two sources, not the first 12 of one

    per_source = prepare([f"{a}#limit=5", f"{b}#problem_key=question,answer_key=gold.value,limit=3"],
                         tmp_path / "p.jsonl", seed=None)
    assert [s.written for s in per_source.sources] == [5, 3] and per_source.sources[0].over_limit == 15


def test_parquet_source_boxed_answers_and_the_dapo_wrapper(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    wrapped = [{"prompt": [{"role": "user", "content": (
        "Solve the following math problem step by step. The last line of your response should be of the form "
        "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
        f"{r['problem']}\n\nRemember to put your answer on its own line after \"Answer:\".")}],
        "reward_model": {"ground_truth": r["answer"], "style": "rule"}} for r in ROWS[:5]]
    pq.write_table(pa.Table.from_pylist(wrapped), tmp_path / "dapo.parquet")
    src = f"{tmp_path / 'dapo.parquet'}#problem_key=prompt.0.content,answer_key=reward_model.ground_truth,problem_format=dapo"
    prepare([src], tmp_path / "d.jsonl", seed=None)
    assert [(r["problem"], r["answer"]) for r in read(tmp_path / "d.jsonl")] == [(r["problem"].strip(), r["answer"]) for r in ROWS[:5]]

    # MATH-style rows: the gold answer is the last \boxed{} of the solution (SOURCES.md: true for all of MATH500)
    math = write_jsonl(tmp_path / "sol.jsonl", [{"problem": r["problem"], "solution": r["solution"]} for r in ROWS])
    prepare([f"{math}#answer_key=solution,answer_format=boxed"], tmp_path / "b.jsonl", seed=None)
    assert [r["answer"] for r in read(tmp_path / "b.jsonl")] == [r["answer"] for r in ROWS]


def test_helpers():
    assert last_boxed(r"so \boxed{\frac{1}{2}} and then \boxed{x^{2}+1}.") == "x^{2}+1"
    assert last_boxed(r"\fbox{7}") == "7" and last_boxed(r"\boxed 5$") == "5" and last_boxed("no box") is None
    assert last_boxed(r"\boxed{unbalanced") is None
    assert strip_dapo_prompt("What is 1+1?") == "What is 1+1?"
    spec = parse_source("hf:org/Some-Set:test[:100]#config=en,answer_key=a.b")
    assert (spec.hub, spec.location, spec.split, spec.config, spec.answer_key, spec.name) == (
        True, "org/Some-Set", "test[:100]", "en", "a.b", "some-set")
    assert parse_source("hf:org/x").split == "train"
    for bad in ("data.csv", "x.jsonl#oops", "x.jsonl#limit=0", "x.jsonl#answer_format=latex", "x.jsonl#config=en", "hf:"):
        with pytest.raises(DataError):
            parse_source(bad)
    with pytest.raises(DataError, match="no such file"):
        prepare(["/nonexistent/x.jsonl"], "/tmp/never.jsonl")


def test_verl_parquet_layout(tmp_path):
    import pyarrow.parquet as pq

    from bae import tasks

    src = write_jsonl(tmp_path / "m.jsonl", ROWS[:3])
    prepare([str(src)], tmp_path / "train.jsonl", seed=None)
    n = to_verl_parquet(tmp_path / "train.jsonl", tmp_path / "train.parquet", task="self_confidence")
    table = pq.read_table(tmp_path / "train.parquet").to_pylist()
    assert n == 3 and len(table) == 3
    row = table[0]
    assert row["data_source"] == "self_confidence"
    assert row["prompt"] == tasks.get("self_confidence").format_prompt(ROWS[0]["problem"])
    assert row["reward_model"]["ground_truth"] == ROWS[0]["answer"]
    assert row["extra_info"]["id"] == "m-0" and "bae_task_options" not in row["extra_info"]
    to_verl_parquet(tmp_path / "train.jsonl", tmp_path / "bce.parquet", task="self_confidence",
                    task_options={"confidence_reward": "bce"})
    assert pq.read_table(tmp_path / "bce.parquet").to_pylist()[0]["extra_info"]["bae_task_options"] == {"confidence_reward": "bce"}
