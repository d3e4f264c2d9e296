"""bae.evaluation.generations: reading generations files and eval sets; errors name the line."""

import json

import pytest

from bae.evaluation.generations import (
    InputError,
    atomic_write_text,
    group_by_prompt,
    read_eval_set,
    read_generations,
    write_generations,
)


def write(tmp_path, lines, name="g.jsonl"):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_reads_valid_generations(tmp_path):
    """Integer prompt ids and numeric golds become strings, extra keys are kept, blank lines skipped, prompts keep
    the order of their first line."""
    path = write(tmp_path, [
        json.dumps({"prompt_id": 7, "completion": "a", "gold": "1", "sample": 0}),
        "",
        json.dumps({"prompt_id": "x", "completion": "b", "gold": "2", "problem": "p"}),
        json.dumps({"prompt_id": 7, "completion": "c", "gold": 1}),
    ])
    rows = read_generations(path)
    assert [r["prompt_id"] for r in rows] == ["7", "x", "7"]
    assert rows[0]["sample"] == 0
    assert rows[2]["gold"] == "1"  # a numeric gold becomes its string (and agrees with line 1)
    assert {k: [r["completion"] for r in v] for k, v in group_by_prompt(rows).items()} == {"7": ["a", "c"], "x": ["b"]}


GOOD = json.dumps({"prompt_id": "p", "completion": "c", "gold": "1"})


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"prompt_id": "p", "completion": ', "not valid JSON"),
        ('["p", "c", "1"]', "expected a JSON object, got list"),
        ('{"prompt_id": "p", "gold": "1"}', "missing key 'completion'"),
        ('{"completion": "c", "gold": "1"}', "missing key 'prompt_id'"),
        ('{"prompt_id": "p", "completion": 3, "gold": "1"}', "'completion' must be a string, got int"),
        ('{"prompt_id": true, "completion": "c", "gold": "1"}', "'prompt_id' must be a string, got bool"),
        ('{"prompt_id": "q", "completion": "c", "gold": "  "}', "'gold' is empty"),
        ('{"prompt_id": "q", "completion": "c", "gold": "1", "problem": null}', "'problem' must be a string"),
        ('{"prompt_id": "p", "completion": "c", "gold": "2"}', "differs from '1' given for prompt_id 'p' on line 1"),
    ],
)
def test_malformed_generation_line_is_named(tmp_path, bad, message):
    """The error says PATH:LINE (here line 3, after a valid line and a blank one) and what is wrong."""
    path = write(tmp_path, [GOOD, "", bad])
    with pytest.raises(InputError) as err:
        read_generations(path)
    assert f"{path}:3:" in str(err.value)
    assert message in str(err.value)


def test_empty_or_missing_generations_file(tmp_path):
    with pytest.raises(InputError, match="empty"):
        read_generations(write(tmp_path, ["", "  "]))
    with pytest.raises(InputError, match="no such file"):
        read_generations(tmp_path / "absent.jsonl")


def test_eval_set_reading(tmp_path):
    """Default ids name the line; numeric answers become strings; limit keeps the first rows."""
    path = write(tmp_path, [
        json.dumps({"problem": "1+1", "answer": 2}),
        json.dumps({"id": "b", "problem": "2+2", "answer": "4", "level": 1}),
        json.dumps({"id": "c", "problem": "3+3", "answer": "6"}),
    ], "set.jsonl")
    rows = read_eval_set(path)
    assert rows[0] == {"id": "row-1", "problem": "1+1", "answer": "2"}
    assert [r["id"] for r in read_eval_set(path, limit=2)] == ["row-1", "b"]
    bad = write(tmp_path, [json.dumps({"id": "a", "problem": "x", "answer": "1"}),
                           json.dumps({"id": "a", "problem": "y", "answer": "2"})], "dup.jsonl")
    with pytest.raises(InputError, match=r"dup.jsonl:2: id 'a' repeats line 1"):
        read_eval_set(bad)
    with pytest.raises(InputError, match=r"nop.jsonl:1: missing key 'problem'"):
        read_eval_set(write(tmp_path, [json.dumps({"answer": "1"})], "nop.jsonl"))


def test_writes_are_atomic_and_round_trip(tmp_path):
    rows = [{"prompt_id": "p", "completion": "é <answer>1</answer>", "gold": "1", "sample": 0}]
    path = tmp_path / "sub" / "out.jsonl"
    write_generations(rows, path)
    assert read_generations(path) == rows
    atomic_write_text(path, "replaced\n")
    assert path.read_text() == "replaced\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.jsonl"]  # no temporary left
