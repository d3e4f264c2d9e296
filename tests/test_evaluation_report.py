"""bae.evaluation end to end: the real eval sets, a hand-worked report, the tiny model, errors."""

import itertools
import json
import math
from pathlib import Path

import pytest

from bae import tasks
from bae.verify.worker import equal as math_verify_equal
from bae.evaluation import EvalConfig, InputError, evaluate_generations, run_eval
from bae.evaluation.sets import EVAL_SETS
from bae.evaluation.sets import path as eval_set

SETS = tuple(EVAL_SETS)
REPORT_FILES = {"metrics.json", "report.md", "reliability.png", "tts.png", "risk_coverage.png", "scores.jsonl"}


def load(name: str) -> list[dict]:
    path = eval_set(name)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def completion(answer: str | None, confidence: str | None) -> str:
    """A self-confidence completion; no answer -> untagged text; no confidence -> no 2nd block."""
    if answer is None:
        return "I cannot do this."
    text = f"<reasoning>work</reasoning><answer>{answer}</answer>"
    if confidence is not None:
        text += f"<analysis>check</analysis><confidence>{confidence}</confidence>"
    return text


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def strict_json(path: Path) -> dict:
    """Parse JSON, failing on NaN / Infinity (not JSON)."""
    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("name", SETS)
def test_verifier_accepts_every_gold_answer_as_equal_to_itself(name):
    """math-verify, as bae's verifier worker runs it (\\boxed{answer} against $answer$), on every
    row: the identical-string fast path of math_equal is bypassed so the parser itself is checked."""
    rows = load(name)
    rejected = [r["id"] for r in rows if not math_verify_equal(r["answer"], r["answer"])]
    assert rejected == []


W = ["123456789", "123456789.0", "\\frac{246913578}{2}"]  # one wrong answer, three spellings
V = "987654321"  # another wrong answer


def test_report_end_to_end_on_a_hand_worked_case(tmp_path):
    """Three MATH500 prompts, six samples each, with known correctness and confidences.

    P0: (g .9) (W .3) (W' .2) (W'' .1) (g .8) (no answer)     correct 1 0 0 0 1 0
    P1: (g 1.0) x3, (V 0.0), (g 1.0), (g, no confidence)        correct 1 1 1 0 1 1
    P2: (V 1.0) (W .6) (g .6) (V .7) (W 0.0) (g .3)             correct 0 0 1 0 0 1
    Accuracy 9/18. With missing confidences as 0: Brier = (.19 + 1 + 2.5) / 18; ECE = 3.9 / 18
    (bins 0.0: 4 samples, 1 right -> 4(.25); .1: .1; .2: .2; .3: 2(.2); .6: 2(.1); .7: .7;
    .8: .2; .9: .1; 1.0: 5 samples, 4 right -> 5(.2)).
    All six samples: majority picks W in P0 (3 spellings, 3 votes > 2: only if grouped by the
    verifier) and V in P2 (three 2-vote groups, V first) -> 1/3; weighted majority picks g in
    P0 (1.7 > .6) and V in P2 (1.7 > .9) -> 2/3; max-confidence g, g, V -> 2/3; Pass@6 = 1.
    """
    gold = [r["answer"] for r in load("math500")[:3]]
    design = [
        [(gold[0], "0.9"), (W[0], "0.3"), (W[1], "0.2"), (W[2], "0.1"), (gold[0], "0.8"), (None, None)],
        [(gold[1], "1.0")] * 3 + [(V, "0.0"), (gold[1], "1.0"), (gold[1], None)],
        [(V, "1.0"), (W[0], "0.6"), (gold[2], "0.6"), (V, "0.7"), (W[0], "0.0"), (gold[2], "0.3")],
    ]
    rows = [
        {"prompt_id": f"p{i}", "completion": completion(a, q), "gold": gold[i]}
        for i, samples in enumerate(design)
        for a, q in samples
    ]
    path = write_jsonl(tmp_path / "gens.jsonl", rows)
    out = tmp_path / "report"
    result = run_eval(EvalConfig(task="self_confidence", generations=str(path), out_dir=str(out), bootstrap=200))

    assert {p.name for p in out.iterdir()} == REPORT_FILES  # and no temporary file left behind
    assert strict_json(out / "metrics.json") == json.loads(json.dumps(result))
    for name in ("reliability.png", "tts.png", "risk_coverage.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    scores = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    correct = [int(s["correct"]) for s in scores]
    assert correct == [1, 0, 0, 0, 1, 0] + [1, 1, 1, 0, 1, 1] + [0, 0, 1, 0, 0, 1]
    q = [0.0 if s["confidence"] is None else s["confidence"] for s in scores]

    m = result["metrics"]
    assert result["counts"] == {"prompts": 3, "completions": 18, "samples_per_prompt": {"min": 6, "max": 6},
                                "malformed": 2, "confidence_missing": 2, "confidence_given": 0,
                                "abstained": 0}
    assert m["accuracy"]["value"] == 9 / 18
    assert m["accuracy"]["se"] == pytest.approx(math.sqrt(0.25 * 18 / 17 / 18))  # std(ddof=1)/sqrt(N)
    brier = sum((a - b) ** 2 for a, b in zip(q, correct)) / 18
    assert brier == pytest.approx((0.19 + 1 + 2.5) / 18) and m["brier"]["value"] == pytest.approx(brier, abs=1e-12)
    assert m["ece"]["value"] == pytest.approx(3.9 / 18, abs=1e-12)
    pos = [a for a, c in zip(q, correct) if c]
    neg = [a for a, c in zip(q, correct) if not c]
    pairs = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg)) / (len(pos) * len(neg))
    assert m["auroc"]["value"] == pytest.approx(pairs, abs=1e-12)
    for name in ("auroc", "ece", "brier", "aurc"):
        assert m[name]["se"] > 0

    curves = result["tts"]
    assert curves["k"] == [1, 2, 3, 4, 5, 6]
    at6 = {s: curves[s]["value"][-1] for s in ("pass@k", "majority", "weighted_majority", "max_confidence")}
    assert at6 == {"pass@k": 1.0, "majority": pytest.approx(1 / 3), "weighted_majority": pytest.approx(2 / 3),
                   "max_confidence": pytest.approx(2 / 3)}
    assert curves["pass@1"]["value"][0] == pytest.approx(0.5)

    report = (out / "report.md").read_text()
    assert "0.500 ±" in report and "![reliability diagram](reliability.png)" in report


@pytest.mark.parametrize("name", SETS)
def test_report_runs_on_generations_built_from_each_real_set(tmp_path, name):
    """20 prompts per set, 4 samples each: gold (.8), wrong (.3), gold (.6), another wrong (.5).
    The verifier accepts each gold completion and rejects each wrong one, so accuracy is 1/2,
    AUROC 1 (every correct sample is more confident), and majority vote ties 2-2 with the gold
    first -> 1."""
    rows = []
    for r in load(name)[:20]:
        for answer, q in ((r["answer"], "0.8"), (W[0], "0.3"), (r["answer"], "0.6"), (V, "0.5")):
            rows.append({"prompt_id": r["id"], "problem": r["problem"],
                         "completion": completion(answer, q), "gold": r["answer"]})
    path = write_jsonl(tmp_path / "gens.jsonl", rows)
    result = run_eval(EvalConfig(generations=str(path), out_dir=str(tmp_path / "out"), bootstrap=50))
    scores = [json.loads(line) for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()]
    assert [s["correct"] for s in scores] == [True, False, True, False] * 20
    assert result["metrics"]["accuracy"]["value"] == 0.5
    assert result["metrics"]["auroc"]["value"] == 1.0
    assert result["tts"]["majority"]["value"][-1] == 1.0


def test_generations_limit_keeps_the_first_prompts(tmp_path):
    rows = [{"prompt_id": f"p{i}", "completion": completion("1", "0.5"), "gold": "1"} for i in range(5)]
    path = write_jsonl(tmp_path / "gens.jsonl", rows)
    result = run_eval(EvalConfig(generations=str(path), limit=2, out_dir=str(tmp_path / "out"), bootstrap=0))
    assert result["counts"]["prompts"] == 2
    assert result["metrics"]["auroc"]["se"] == 0.0  # bootstrap=0: no resamples, standard error 0


def test_malformed_generations_line_is_named_before_anything_runs(tmp_path):
    path = tmp_path / "gens.jsonl"
    path.write_text(json.dumps({"prompt_id": "a", "completion": "x", "gold": "1"}) + "\n{oops\n")
    with pytest.raises(InputError, match=r"gens.jsonl:2: not valid JSON"):
        run_eval(EvalConfig(generations=str(path), out_dir=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_all_malformed_completions_report_no_calibration(tmp_path):
    """No answer and no confidence anywhere: accuracy 0 and majority votes 0, but no calibration,
    selective-prediction or confidence-voting figure (an ECE of 0 here would mean nothing): null
    in metrics.json with the reason, "not reported" in report.md, no reliability or risk-coverage
    PNG; two warnings; no NaN in JSON."""
    rows = [{"prompt_id": f"p{i // 3}", "completion": "no tags at all", "gold": "1"} for i in range(6)]
    result = evaluate_generations(rows, tasks.get("self_confidence"), tmp_path, bootstrap=20)
    m = result["metrics"]
    assert m["accuracy"]["value"] == 0.0 and [m[k] for k in ("auroc", "ece", "brier", "aurc")] == [None] * 4
    assert m["malformed_rate"]["value"] == 1.0 and m["confidence_missing_rate"]["value"] == 1.0
    assert result["tts"]["majority"]["value"] == [0.0, 0.0, 0.0]
    assert "weighted_majority" not in result["tts"] and "max_confidence" not in result["tts"]
    assert result["selective"] is None and result["reliability"] is None
    assert "no completion has a confidence" in result["not_reported"]["reason"]
    assert "ece" in result["not_reported"]["figures"]
    assert len(result["warnings"]) == 2 and "6 of 6 completions (100%) are malformed" in result["warnings"][0]
    assert REPORT_FILES - {"reliability.png", "risk_coverage.png"} == {p.name for p in tmp_path.iterdir()}
    report = (tmp_path / "report.md").read_text()
    assert "| 0.000 ± 0.000 | not reported | not reported | not reported | not reported |" in report
    assert strict_json(tmp_path / "metrics.json")["metrics"]["ece"] is None


def test_evaluate_generations_without_out_dir_writes_nothing(tmp_path, monkeypatch):
    """The training loop's path: same figures, returned only."""
    monkeypatch.chdir(tmp_path)
    rows = [{"prompt_id": "p", "completion": completion("2", "0.75"), "gold": "2"},
            {"prompt_id": "p", "completion": completion("3", "0.25"), "gold": "2"}]
    result = evaluate_generations(rows, tasks.get("arithmetic"), bootstrap=0)
    assert result["metrics"]["accuracy"]["value"] == 0.5
    assert result["metrics"]["brier"]["value"] == pytest.approx((0.25**2 + 0.25**2) / 2)
    assert list(tmp_path.iterdir()) == []


def test_a_model_folder_is_sampled_with_its_recorded_task(warm_policy, tmp_path):
    """A warm-started folder records its task (arithmetic, no system prompt): with no --task,
    bae eval samples with exactly that prompt format and scores with that task; n samples per
    prompt, generations.jsonl + report. Given explicitly, another task (self_confidence on MATH500,
    greedy) is used instead, with its own prompt."""
    from bae.evaluation import eval_task
    from bae.evaluation.sampling import load_transformers, render_prompt

    recorded = tasks.load_record(warm_policy)
    assert recorded.name == "arithmetic" and recorded.system_prompt == ""
    out = tmp_path / "arith"
    result = run_eval(EvalConfig(model=warm_policy, data="synthetic", n=2, limit=3, max_new_tokens=30,
                                 bootstrap=10, batch_size=4, out_dir=str(out)))
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [(g["sample"]) for g in gens] == [0, 1] * 3
    assert len({g["prompt_id"] for g in gens}) == 3
    assert result["task"] == "arithmetic" and result["counts"]["completions"] == 6
    assert result["metrics"]["malformed_rate"]["value"] < 0.5  # the warm start's own format
    assert REPORT_FILES | {"generations.jsonl"} == {p.name for p in out.iterdir()}
    _, tokenizer = load_transformers(warm_policy)
    config = EvalConfig(model=warm_policy, data="synthetic")
    assert "system" not in render_prompt(tokenizer, eval_task(config).format_prompt("What is 1 + 1?"))
    assert eval_task(EvalConfig(model=warm_policy, data="synthetic", task_options={"malformed": "all_worst"})
                     ).config.malformed == "all_worst"  # options on top of the recorded task
    with pytest.raises(ValueError, match="confidence_reward.*do not apply"):
        eval_task(EvalConfig(model=warm_policy, data="synthetic", task_options={"confidence_reward": "bce"}))

    out = tmp_path / "math"
    result = run_eval(EvalConfig(task="self_confidence", model=warm_policy, data="math500", n=2, limit=2,
                                 max_new_tokens=4, temperature=0.0, bootstrap=10, out_dir=str(out)))
    gens = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert [g["gold"] for g in gens] == [r["answer"] for r in load("math500")[:2] for _ in range(2)]
    assert gens[0]["completion"] == gens[1]["completion"]  # temperature 0 is greedy
    assert result["task"] == "self_confidence"


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"generations": "g.jsonl", "model": "tiny"}, "generations"),
        ({"model": "tiny"}, "model"),
        ({}, "model"),
        ({"generations": "g.jsonl", "n": 0}, "n"),
        ({"generations": "g.jsonl", "temperature": -1.0}, "temperature"),
        ({"generations": "g.jsonl", "backend": "tgi"}, "backend"),
        ({"generations": "g.jsonl", "limit": 0}, "limit"),
        ({"generations": "g.jsonl", "target_accuracy": 1.5}, "target_accuracy"),
    ],
)
def test_eval_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"EvalConfig\.{field}="):
        EvalConfig(**kwargs)


def test_no_rows_at_all_give_the_documented_empty_values(tmp_path):
    """A periodic evaluation that produced nothing: accuracy 0, no calibration figure (no
    confidence), no k; the report is still written, without numpy warnings."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate_generations([], tasks.get("arithmetic"), tmp_path, bootstrap=10)
    m = result["metrics"]
    assert m["accuracy"]["value"] == 0.0 and [m[k] for k in ("auroc", "ece", "brier", "aurc")] == [None] * 4
    assert result["tts"]["k"] == [] and result["selective"] is None
    assert REPORT_FILES - {"reliability.png", "risk_coverage.png"} == {p.name for p in tmp_path.iterdir()}


def test_abstentions_count_as_wrong_and_never_vote(tmp_path):
    """Per prompt: two abstentions ("unknown") and one right answer. Accuracy 1/3 and
    abstain_rate 2/3; majority vote over all 3 samples picks the right answer, because an
    abstention is not an answer and does not vote (it would win 2 to 1 if it did)."""
    task = tasks.get("arithmetic", abstain="unknown")

    def text(answer, q):
        return (f"<reasoning>x</reasoning><answer>{answer}</answer>"
                f"<analysis>y</analysis><confidence>{q}</confidence>")

    rows = [{"prompt_id": f"p{p}", "completion": text(a, q), "gold": "7"}
            for p in range(4) for a, q in (("unknown", "0"), ("unknown", "0"), ("7", "0.9"))]
    result = evaluate_generations(rows, task, tmp_path, bootstrap=20)
    assert result["metrics"]["accuracy"]["value"] == pytest.approx(1 / 3)
    assert result["metrics"]["abstain_rate"]["value"] == pytest.approx(2 / 3)
    assert result["counts"]["abstained"] == 8
    assert result["tts"]["majority"]["value"][-1] == 1.0
    assert "8 abstained" in (tmp_path / "report.md").read_text()
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert sum(s["abstained"] for s in scores) == 8


def test_shipped_eval_sets_are_addressable_by_name(tmp_path):
    """The three sets ship inside the package (row counts of SOURCES.md) and every entry point
    takes their names: read_eval_set, `data.eval_source` of a train config, and `bae eval --data`."""
    from bae.runs.config import parse
    from bae.evaluation.generations import read_eval_set
    from bae.evaluation.sets import FOLDER

    assert {name: len(read_eval_set(name)) for name in EVAL_SETS} == {"math500": 500, "gsm8k": 1319, "aime": 90}
    assert (FOLDER / "SOURCES.md").is_file() and FOLDER.is_relative_to(Path(__file__).parents[1] / "bae")
    with pytest.raises(ValueError, match="unknown eval set 'math5000'.*math500, gsm8k, aime"):
        eval_set("math5000")
    config = parse({"data": {"source": str(tmp_path / "train.jsonl"), "eval_source": "gsm8k"}})
    (tmp_path / "train.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n')
    config.check_files()  # a shipped name is not a missing file
    assert read_eval_set("aime", limit=3)[0]["id"] == "aime-2023-I-1"
