"""One way to read prompts {id, problem, answer} from a local file of any supported format with
configurable keys, used by training (data.source), evaluation (--data) and prepare-data; and one
line, exit 2, when a hub dataset cannot be loaded."""

import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bae.evaluation.generations import InputError, read_eval_set, read_prompts
from bae.evaluation.sets import resolve
from bae.runs.config import ConfigError, parse
from bae.runs.data import DataError, prepare
from bae.runs.train import load_prompts

MATH500 = [json.loads(line) for line in resolve("math500").read_text().splitlines()[:6]]
THEIRS = [{"question": r["problem"], "meta": {"final": r["answer"]}, "id": r["id"]} for r in MATH500]
EXPECTED = [{"id": r["id"], "problem": r["problem"].strip(), "answer": r["answer"]} for r in MATH500]


def write_all_formats(folder):
    """The same rows, keyed question / meta.final, as JSON Lines, a JSON list, {"data": [...]},
    and parquet."""
    paths = {"jsonl": folder / "p.jsonl", "json": folder / "p.json", "json_data": folder / "d.json",
             "parquet": folder / "p.parquet"}
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in THEIRS))
    paths["json"].write_text(json.dumps(THEIRS))
    paths["json_data"].write_text(json.dumps({"data": THEIRS}))
    pq.write_table(pa.Table.from_pylist(THEIRS), paths["parquet"])
    return paths


@pytest.mark.parametrize("fmt", ["jsonl", "json", "json_data", "parquet"])
def test_every_format_reads_the_same_prompts_with_the_keys_given(tmp_path, fmt):
    path = write_all_formats(tmp_path)[fmt]
    assert read_prompts(path, problem_key="question", answer_key="meta.final") == EXPECTED
    with pytest.raises(InputError, match=r"missing key 'problem' \(keys present: \['id', 'meta', 'question'\]\)"):
        read_prompts(path)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_training_reads_data_source_in_any_format_with_its_keys(tmp_path, fmt):
    """`problem_key: question` in a train config was ignored for local files, and .json/.parquet
    were read as JSON Lines. Now data.source is read with data.problem_key / data.answer_key, in
    any format; the held-out rows default to the first training rows."""
    path = write_all_formats(tmp_path)[fmt]
    config = parse({"data": {"source": str(path), "problem_key": "question", "answer_key": "meta.final", "limit": 4},
                    "eval": {"limit": 2}})
    train, held_out = load_prompts(config)
    assert train == EXPECTED[:4] and held_out == EXPECTED[:2]
    with pytest.raises(ValueError, match=r"data.source: .*missing key 'problem'.*data.problem_key / data.answer_key"):
        load_prompts(parse({"data": {"source": str(path)}}))


def test_training_eval_source_and_eval_data_use_the_same_reader(tmp_path):
    paths = write_all_formats(tmp_path)
    held = tmp_path / "held.parquet"
    pq.write_table(pa.Table.from_pylist(EXPECTED[4:]), held)
    config = parse({"data": {"source": str(paths["json"]), "problem_key": "question", "answer_key": "meta.final",
                             "eval_source": str(held)}})
    assert load_prompts(config)[1] == EXPECTED[4:]
    assert read_eval_set(held) == EXPECTED[4:]  # what `bae eval --data held.parquet` samples on
    with pytest.raises(ValueError, match="data.eval_source: .*missing key 'problem'"):
        load_prompts(parse({"data": {"source": str(paths["jsonl"]), "problem_key": "question",
                                     "answer_key": "meta.final", "eval_source": str(paths["parquet"])}}))


def test_prepare_data_reads_through_the_same_reader(tmp_path):
    """prepare-data on the parquet file with the same keys writes the same problems and answers,
    and its output is what training reads with the default keys."""
    out = tmp_path / "prepared.jsonl"
    prepare([str(write_all_formats(tmp_path)["parquet"])], out, problem_key="question", answer_key="meta.final",
            seed=None)
    rows = read_prompts(out)
    assert [(r["problem"], r["answer"]) for r in rows] == [(r["problem"], r["answer"]) for r in EXPECTED]
    assert load_prompts(parse({"data": {"source": str(out)}}))[0] == rows


@pytest.mark.parametrize(
    "row, message",
    [({"problem": "x", "answer": 0.5}, "'answer' must be a non-empty string or an integer, got float 0.5"),
     ({"problem": "x", "answer": True}, "'answer' must be a non-empty string or an integer, got bool True"),
     ({"problem": "x", "answer": "  "}, "'answer' must be"),
     ({"problem": "", "answer": "1"}, "'problem' must be a non-empty string"),
     ({"problem": "x", "answer": "1", "id": [1]}, "'id' must be a string or an integer")],
)
def test_unusable_rows_are_named(tmp_path, row, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"problem": "ok", "answer": 3}, row]))
    with pytest.raises(InputError, match=rf"bad.json: item 2: {message}"):
        read_prompts(path)
    assert read_prompts(path, limit=1) == [{"id": "row-1", "problem": "ok", "answer": "3"}]  # an int is an answer


def test_keys_for_the_arithmetic_generator_mean_nothing_and_are_refused():
    with pytest.raises(ConfigError, match="data: problem_key / answer_key name the columns"):
        parse({"data": {"problem_key": "question"}})


def test_hub_rows_go_through_the_same_checks(monkeypatch):
    """A hub source with nested fields (DAPO's layout) reads with dotted keys; a row without the
    key is named by its row number."""
    import datasets

    rows = [{"prompt": [{"content": "1+1?"}], "reward_model": {"ground_truth": "2"}},
            {"prompt": [{"content": "2+2?"}], "reward_model": {"ground_truth": 4}}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    config = parse({"data": {"source": "hf:someone/some-set", "problem_key": "prompt.0.content",
                             "answer_key": "reward_model.ground_truth"}})
    assert load_prompts(config)[0] == [{"id": "0", "problem": "1+1?", "answer": "2"},
                                       {"id": "1", "problem": "2+2?", "answer": "4"}]
    with pytest.raises(ValueError, match=r"hf:someone/some-set:train: row 1: missing key 'problem'"):
        load_prompts(parse({"data": {"source": "hf:someone/some-set"}}))


def test_a_hub_dataset_that_cannot_be_loaded_is_one_line_and_exit_2(tmp_path, monkeypatch):
    """Offline, `bae prepare-data hf:...` printed a 99-line traceback: now one line naming the
    source, exit 2, nothing written."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-m", "bae.cli", "prepare-data", "hf:nobody/no-such-set:train",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: hf:nobody/no-such-set:train: cannot load the dataset (offline"), lines
    assert not out.exists()

    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nobody/no-such-set' on the Hub\n(a second line)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(DataError, match=r"^hf:nobody/no-such-set:train: cannot load the dataset: ConnectionError: "
                                        r"Couldn't reach 'nobody/no-such-set' on the Hub \(a second line\)$"):
        prepare(["hf:nobody/no-such-set"], out)  # any failure of the library, in one line
    with pytest.raises(ValueError, match=r"^data.source hf:nobody/no-such-set:train: cannot load the dataset"):
        load_prompts(parse({"data": {"source": "hf:nobody/no-such-set"}}))
