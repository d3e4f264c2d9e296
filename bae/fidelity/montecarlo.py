"""The Monte-Carlo pipeline on a real policy: sample, fix each prefix, continue it M times, compare.

See bae.fidelity for what is measured and the rules.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from bae.advantages import NEEDS_OUTCOMES, blockwise_advantages
from bae.fidelity.config import RULES, STRATA, FidelityConfig
from bae.fidelity.report import write_report
from bae.fidelity.statistics import estimator_errors, stratum_sizes, summarize_errors


def fidelity_task(config: FidelityConfig):
    """The task compared: config.task (with its options), else the model folder's recorded task
    (bae.tasks.RECORD, options on top), else arithmetic."""
    from bae import tasks

    if config.task is not None:
        return tasks.load(config.task, **config.task_options)
    recorded = tasks.load_record(config.model) if Path(config.model).is_dir() else None
    return tasks.load(recorded if recorded is not None else "arithmetic", **config.task_options)


def stratified_outcomes(task, name: str, samples: Sequence[dict], groups: np.ndarray) -> np.ndarray:
    """[N, 2] outcomes of the samples under the task with outcome `name` instead of its own (scored
    again; a group-level outcome such as answer_class assigned within `groups`)."""
    from bae import tasks

    variant = task if task.config.outcomes == (name,) else tasks.from_config(
        {**task.config.model_dump(), "outcomes": [name]})
    scores = variant.score_many([s["completion"] for s in samples], [s["gold"] for s in samples])
    outcomes = np.array([s.outcomes for s in scores], dtype=np.int64)
    return variant.group_outcomes(outcomes, [s.prefix_answers for s in scores], groups)


def _rows(config: FidelityConfig, task) -> list[dict]:
    if config.data is None:
        from bae.tasks import arithmetic

        if not task.name.startswith("arithmetic"):
            raise ValueError(f"task {task.name!r} needs an eval set: give data (a shipped set or JSON Lines with problem and answer)")
        return arithmetic.generate(config.prompts, seed=12345 + config.seed, levels=config.levels)
    from bae.evaluation.generations import read_eval_set

    return read_eval_set(config.data, config.prompts)


def continue_texts(policy, tokenizer, inputs: Sequence[str], budgets: Sequence[int], m: int, temperature: float,
                   *, seed: int = 0, batch_size: int = 512) -> list[list[str]]:
    """m sampled continuations of each input text, each cut to its own token budget: [U][m] texts
    (decoded with skip_special_tokens=True, as completions are). Reproducible from `seed`; the
    caller's random state, the policy's mode and the tokenizer's padding side are left as they were."""
    from bae.evaluation.sampling import sampling_state

    jobs = sorted(((u, j) for u in range(len(inputs)) for j in range(m)), key=lambda t: (len(inputs[t[0]]), t))
    out: list[list[str]] = [[""] * m for _ in inputs]
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else dict(do_sample=False)
    with sampling_state(policy, tokenizer, seed) as device:
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            enc = tokenizer([inputs[u] for u, _ in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            width = enc["input_ids"].shape[1]
            ids = policy.generate(**enc, max_new_tokens=max(budgets[u] for u, _ in batch),
                                  pad_token_id=tokenizer.pad_token_id, **sampling)  # [b, width + new]
            for row, (u, j) in enumerate(batch):
                out[u][j] = tokenizer.decode(ids[row, width:width + budgets[u]], skip_special_tokens=True)
    return out


def solution_prefix(task, completion: str) -> str | None:
    """The completion's text up to the end of its solution block, or None when that block is
    incomplete (then block 2's reward is its worst whatever follows: no continuation)."""
    split = task.split(completion)
    if split.complete < 1:
        return None
    return completion[: split.spans[0][1]]


def _log(message: str, quiet: bool) -> None:
    if not quiet:
        from rich.console import Console

        Console(stderr=True).print(message)


def run_fidelity(config: FidelityConfig, *, quiet: bool = False) -> dict:
    """Sample, build the MC references, compare every estimator, write the report folder.

    Returns the metrics (as metrics.json): {"config", "rules", "setup", "block1", "groups": {G:
    {"estimators": {name: {stratum: summary}}, "singletons": {stratum: fraction}}}, "timings"}.
    """
    from bae.evaluation.sampling import load_transformers, render_prompt, sample_rows

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if config.model == "tiny":
        raise ValueError("model 'tiny' is the embedded policy: resolve it with bae.embedded.resolve_model first "
                         "(as `bae fidelity --model tiny` does)")
    model_path = config.model
    task = fidelity_task(config)
    timings["model"] = time.perf_counter() - t0
    if task.num_blocks != 2:
        raise ValueError(f"task {task.name!r} has {task.num_blocks} blocks; fidelity compares the second of two")
    rows = _rows(config, task)
    policy, tokenizer = load_transformers(model_path)
    gmax = config.pool

    # 1. the pool: Gmax completions per prompt, scored
    t = time.perf_counter()
    _log(f"sampling {len(rows)} prompts x {gmax} completions", quiet)
    samples = sample_rows((policy, tokenizer), task, rows, n=gmax, temperature=config.temperature,
                          max_new_tokens=config.max_new_tokens, seed=config.seed, batch_size=config.batch_size,
                          progress=not quiet)
    scores = task.score_many([s["completion"] for s in samples], [s["gold"] for s in samples])
    rewards = np.array([s.rewards for s in scores], dtype=np.float64)  # [N, 2]
    outcomes = np.array([s.outcomes for s in scores], dtype=np.int64)  # [N, 2]
    prompt_ids = np.repeat(np.arange(len(rows)), gmax)  # [N]
    outcomes = task.group_outcomes(outcomes, [s.prefix_answers for s in scores], prompt_ids)  # answer_class
    # the rows are reported by the correctness of the prefix (the gold is known here), whatever the
    # estimators stratify by; other stratifications of the same samples for "<baseline>@<outcome>"
    correctness = stratified_outcomes(task, "correct", samples, prompt_ids)
    extra_outcomes = {name: stratified_outcomes(task, name, samples, prompt_ids)
                      for name in config.outcome_strata if (name,) != task.config.outcomes}
    sample_ids = np.tile(np.arange(gmax), len(rows))  # [N]

    # block 1 reference: M fresh completions per prompt
    fresh = sample_rows((policy, tokenizer), task, rows, n=config.continuations, temperature=config.temperature,
                        max_new_tokens=config.max_new_tokens, seed=config.seed + 1, batch_size=config.batch_size,
                        progress=False)
    fresh_r1 = np.array([sc.rewards[0] for sc in task.score_many([s["completion"] for s in fresh], [s["gold"] for s in fresh])]
                        ).reshape(len(rows), -1)
    timings["sample_pool"] = time.perf_counter() - t

    # 2. the MC references of block 2
    t = time.perf_counter()
    rendered = [render_prompt(tokenizer, task.format_prompt(r["problem"])) for r in rows]
    unique: dict[tuple[int, str], int] = {}
    inputs, budgets, prefix_of = [], [], []
    for i, s in enumerate(samples):
        prefix = solution_prefix(task, s["completion"])
        u = -1
        if prefix is not None:
            budget = config.max_new_tokens - len(tokenizer(prefix, add_special_tokens=False)["input_ids"])
            if budget > 0:
                key = (int(prompt_ids[i]), prefix)
                if key not in unique:
                    unique[key] = len(inputs)
                    inputs.append(rendered[prompt_ids[i]] + prefix)
                    budgets.append(budget)
                u = unique[key]
        prefix_of.append((prefix, u))
    _log(f"sampling {len(inputs)} distinct prefixes x {config.continuations} continuations", quiet)
    conts = continue_texts(policy, tokenizer, inputs, budgets, config.continuations, config.temperature,
                           seed=config.seed + 2, batch_size=config.batch_size)
    golds = {}
    for i, s in enumerate(samples):
        golds[prefix_of[i][1]] = s["gold"]
    keys = [(u, prefix + c) for (_, prefix), u in unique.items() for c in conts[u]]
    scored = task.score_many([text for _, text in keys], [golds[u] for u, _ in keys])
    cont_rewards = np.array([sc.rewards[1] for sc in scored]).reshape(len(inputs), config.continuations)  # [U, M]
    mc_values = np.empty(len(samples))  # [N]
    mc_noise = np.zeros(len(samples))  # [N]
    for i, (prefix, u) in enumerate(prefix_of):
        if u < 0:
            mc_values[i] = rewards[i, 1]  # known exactly: worst
        else:
            mc_values[i] = cont_rewards[u].mean()
            mc_noise[i] = cont_rewards[u].var(ddof=1) / config.continuations
    a_mc = rewards[:, 1] - mc_values  # [N]
    timings["continuations"] = time.perf_counter() - t

    # 3. every estimator, every group size
    t = time.perf_counter()
    strata = {name: correctness[:, 1] == value for name, value in STRATA.items()}
    result_groups = {}
    errors_at: dict[int, tuple[dict, np.ndarray]] = {}
    for g in config.group_sizes:
        reps = gmax // g
        keep = sample_ids < reps * g
        replicate = sample_ids // g  # batch id
        idx = np.nonzero(keep)[0]
        errs = estimator_errors(rewards[idx], prompt_ids[idx], outcomes[idx], a_mc[idx], block=1,
                                batches=replicate[idx])
        for oname, other in extra_outcomes.items():
            more = estimator_errors(rewards[idx], prompt_ids[idx], other[idx], a_mc[idx], block=1,
                                    batches=replicate[idx], baselines=[b for b in errs if b in NEEDS_OUTCOMES])
            errs.update({f"{b}@{oname}": e for b, e in more.items()})
        sizes = stratum_sizes(prompt_ids[idx], outcomes[idx, 1], replicate[idx])
        extra_sizes = {oname: stratum_sizes(prompt_ids[idx], other[idx, 1], replicate[idx])
                       for oname, other in extra_outcomes.items()}
        per = {name: {} for name in errs}
        singletons = {}
        singletons_by = {oname: {} for oname in extra_outcomes}
        for sname, mask in strata.items():
            summary = summarize_errors(errs, prompt_ids[idx], mask[idx], mc_noise=mc_noise[idx],
                                       bootstrap=config.bootstrap, seed=config.seed)
            for name in errs:
                per[name][sname] = summary[name]
            singletons[sname] = float((sizes[mask[idx]] == 1).mean()) if mask[idx].any() else math.nan
            for oname, osizes in extra_sizes.items():
                singletons_by[oname][sname] = float((osizes[mask[idx]] == 1).mean()) if mask[idx].any() else math.nan
        summary_all = summarize_errors(errs, prompt_ids[idx], None, mc_noise=mc_noise[idx],
                                       bootstrap=config.bootstrap, seed=config.seed)
        small = summarize_errors(errs, prompt_ids[idx], (sizes <= 2) & ~strata["malformed"][idx], mc_noise=mc_noise[idx],
                                 bootstrap=config.bootstrap, seed=config.seed)
        for name in errs:
            per[name]["all"] = summary_all[name]
            per[name]["small_strata"] = small[name]
        # block 1: every estimator uses the group mean
        a1_hat = blockwise_advantages(rewards[idx], prompt_ids[idx] * gmax + replicate[idx], outcomes[idx],
                                      baseline="group_mean")[:, 0]
        a1_mc = rewards[idx, 0] - fresh_r1.mean(axis=1)[prompt_ids[idx]]
        fresh_noise = (fresh_r1.var(axis=1, ddof=1) / fresh_r1.shape[1])[prompt_ids[idx]]
        block1 = summarize_errors({"group_mean": a1_hat - a1_mc}, prompt_ids[idx], None, mc_noise=fresh_noise,
                                  bootstrap=config.bootstrap, seed=config.seed, reference=None)["group_mean"]
        result_groups[str(g)] = {"replicates": reps, "samples": int(keep.sum()), "estimators": per,
                                 "singletons": singletons, "block1": block1,
                                 "singletons_by_outcome": singletons_by,
                                 "mean_stratum_size": {"task": float(sizes.mean()),
                                                       **{o: float(z.mean()) for o, z in extra_sizes.items()}}}
        errors_at[g] = (errs, idx)
    timings["estimators"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    n = len(samples)
    correct_fraction = float(strata["correct"].mean())
    setup = {
        "model": config.model, "model_path": model_path, "task": task.name, "system_prompt": task.system_prompt,
        "prompts": len(rows), "pool_per_prompt": gmax, "samples": n,
        "task_outcomes": list(task.config.outcomes), "outcome_strata": list(extra_outcomes),
        # from the prefixes' correctness, not r_1 (under malformed="carry" a broken solution's r_1 is below 0)
        "accuracy": correct_fraction, "correct_fraction": correct_fraction,
        "malformed": float(np.mean([s.malformed for s in scores])),
        "incomplete_solution": float(np.mean([p is None for p, _ in prefix_of])),
        "no_continuation": float(np.mean([u < 0 for _, u in prefix_of])),
        "distinct_prefixes": len(inputs), "continuations": int(len(inputs) * config.continuations),
        "mean_reward_block2": float(rewards[:, 1].mean()),
        "mc_value_range": [float(mc_values.min()), float(mc_values.max())],
        "reward_range_block2": [float(task.worst_rewards[1]), 0.0] if task.config.blocks[1].reward == "brier" else None,
        "device": str(next(policy.parameters()).device),
    }
    result = {"config": {**asdict(config)}, "rules": RULES, "setup": setup, "groups": result_groups,
              "timings": timings}
    write_report(result, samples, scores, prefix_of, conts, cont_rewards, mc_values, a_mc, errors_at, strata, config,
                 outcomes_by={"task": outcomes, **extra_outcomes})
    return result

