"""BlockwiseGRPOTrainer: the traps of TRL's defaults and of the documented example, closed.

remove_unused_columns keeps the answers; an iterable eval set with answers is accepted; TRL's GSPO
length-weighting warning, false under method bae, is not shown (and still is for the scalar
methods); the README's TRL example builds as written; TRL outside the checked series is refused."""

import logging
import re
from pathlib import Path

import pytest
from datasets import Dataset, IterableDataset

from bae import tasks
from bae.embedded.tiny import build_model
from bae.engines.trl import GSPO_LENGTH_WARNING, BlockwiseGRPOTrainer, check_trl_version, paper_grpo_config
from trl_scripted import Scripted, config, dataset, one_thread, task, tok  # noqa: F401

README = Path(__file__).parents[1] / "README.md"


def test_remove_unused_columns_keeps_the_answers(tok, task, dataset):
    """remove_unused_columns=True keeps only the columns the trainer names: the engine names the
    answer column with TRL's prompt and images, so a train() step scores with the gold answers
    (without it the step stops at "every row needs an 'answer' value")."""
    trainer = Scripted(build_model(tok), task, config(remove_unused_columns=True), dataset, tok)
    trainer.train()
    assert trainer.state.global_step == 1
    assert trainer._signature_columns == ["prompt", "image", "images", "answer"]
    assert {gold for _, gold in trainer.script_log} <= {row["answer"] for row in dataset}


def test_iterable_eval_dataset_with_answers_is_accepted(tok, task, dataset):
    """An iterable eval set is checked by its first row: one with an answer column builds."""

    def stream():
        yield from dataset

    trainer = BlockwiseGRPOTrainer(build_model(tok), task, config(), dataset, tok,
                                   eval_dataset=IterableDataset.from_generator(stream))
    assert trainer.eval_dataset is not None


def _gspo_warnings(caplog, method, tok, task, dataset):
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trl.trainer.grpo_trainer"):
        BlockwiseGRPOTrainer(build_model(tok), task, config(loss_type="dapo", importance_sampling_level="sequence"),
                             dataset, tok, method=method)
    return [r for r in caplog.records if GSPO_LENGTH_WARNING in r.getMessage()]


def test_gspo_length_warning_only_where_true(caplog, tok, task, dataset):
    """TRL warns that GSPO with dapo weights each sequence by its length. Under method bae the
    engine's factor makes the loss the per-block token mean (tests/test_engine_trl.py checks it
    against a direct L_BAE), so the warning is dropped; the scalar methods keep TRL's aggregation,
    where it is true, and still see it. The filter is removed after construction."""
    assert _gspo_warnings(caplog, "bae", tok, task, dataset) == []
    assert len(_gspo_warnings(caplog, "rlvr", tok, task, dataset)) == 1
    assert logging.getLogger("trl.trainer.grpo_trainer").filters == []


def _readme_trl_example() -> str:
    """The README's BlockwiseGRPOTrainer example (the python block calling paper_grpo_config)."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return next(b for b in blocks if "BlockwiseGRPOTrainer(" in b and "paper_grpo_config(" in b)


def test_readme_trl_example_builds_as_written(tok, tmp_path, monkeypatch):
    """The README's example, exactly as written but for trainer.train() (2048 completions of up to
    4096 tokens), with the tiny model, its tokenizer and a prompt/answer dataset: it builds on a
    machine without a GPU (bf16 only where a GPU has it), and its generation batch is the paper's
    2048 completions in whole groups of 32 (4 a micro-batch x 512 accumulation steps)."""
    monkeypatch.chdir(tmp_path)
    code = _readme_trl_example()
    assert 'paper_grpo_config(output_dir="out")' in code
    runnable = "\n".join(line for line in code.splitlines() if line.strip() != "trainer.train()")
    data = Dataset.from_list([{"prompt": tasks.get("self_confidence").format_prompt("What is 1 + 1?"), "answer": "2"}])
    namespace = {"model": build_model(tok), "tokenizer": tok, "dataset": data}
    exec(runnable, namespace)
    args = namespace["trainer"].args
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.num_generations) == (4, 512, 32)
    assert args.generation_batch_size == 2048 and not args.bf16


def test_paper_config_splits_the_batch_over_processes(monkeypatch):
    """With WORLD_SIZE=8 (set by accelerate or torchrun), 4 completions a micro-batch x 64
    accumulation steps x 8 processes = 2048; each process's generation batch (256) holds whole
    groups of 32."""
    monkeypatch.setenv("WORLD_SIZE", "8")
    args = paper_grpo_config(output_dir="out")
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 64)
    assert args.generation_batch_size % args.num_generations == 0


def test_trl_outside_the_checked_series_is_refused():
    """bae.engines.trl accepts TRL 1.16.x only (its internals are not an API: see
    tests/test_trl_contract.py); another version raises ImportError naming the one to install."""
    import trl

    check_trl_version(trl.__version__)
    for version in ("1.16.0", "1.16.3", "1.16.1.dev0"):
        check_trl_version(version)
    for version in ("1.17.0", "1.15.2", "2.0.0"):
        with pytest.raises(ImportError, match=r"trl==1\.16\.\*"):
            check_trl_version(version)


def test_one_list_of_loss_types():
    """bae.engines.trl.LOSS_TYPES is the one list: bae train's schema accepts exactly its loss types
    (vespo, which the engine refuses under bae, is refused there too, naming the list), and the
    README's loss-types paragraph names the same seven."""
    from bae.engines.trl import LOSS_TYPES
    from bae.runs.config import ConfigError, parse

    for loss_type in LOSS_TYPES:
        assert parse({"loss_type": loss_type}).loss_type == loss_type
    with pytest.raises(ConfigError, match=re.escape(str(list(LOSS_TYPES)))):
        parse({"loss_type": "vespo"})
    paragraph = re.search(r"\*\*Loss types\*\* \(`bae.engines.trl.LOSS_TYPES`[^:]*: ([^.]*)\.", README.read_text())
    assert sorted(paragraph.group(1).replace("\n", " ").split(", ")) == sorted(LOSS_TYPES)
