"""Tasks: a prompt format, a block schema, one reward per block and an outcome per later block.

    task = bae.tasks.get("self_confidence")            # or "boxed", "arithmetic", "two_attempt", ...
    score = task.score(completion_text, gold_answer)
    score.rewards, score.outcomes                      # one per block: rows of r[N, K], o[N, K]

Built in (BUILTIN): self_confidence, two_attempt, boxed (free text whose answer is its last
\\boxed{}: most math RL outputs), arithmetic, arithmetic_two_attempt. Any other format is a
TaskConfig (a mapping, or a YAML / JSON task file: `load`).

Block rewards and outcomes are registered by name (BLOCK_REWARDS, OUTCOMES), so a K-block task can
be built from a config (`from_config`) without code. Each block reward declares its worst value.

Malformed completions (see bae.blocks): under the default policy "partial", the well-formed
leading blocks are scored as usual and every incomplete block gets its worst reward; under
"all_worst" every block gets its worst reward; "carry" is "partial" where the block the text broke
in also carries the (negative) worst rewards of the blocks after it (their tokens do not exist, so
under a blockwise advantage nothing else would answer for them: with Brier's worst of -1, a
solution block cut short earns 0 - 1 = -1, below any well-formed wrong answer, as the scalar sum
r_1 + r_2 charges it under "partial"). "carry" is for method bae: a scalar method sums the blocks'
rewards and would count the left-out blocks twice (BlockwiseGRPOTrainer refuses the pair;
`task.total_reward(score)` is the scalar without the double count, what verl's built-in estimators
get as reward_score). A field
that is present but unusable (an empty answer, an unparseable confidence) also gets the worst
reward of its block. Either way a malformed completion never earns more, block by block, than the
well-formed completion it was cut from.
The outcome of a well-formed prefix that holds no usable answer is 0 ("incorrect"); the outcome of
a prefix that is itself malformed (an earlier block incomplete) is MALFORMED_OUTCOME (-1), a stratum
of its own: its later blocks all get their worst reward, so its value differs from that of a
well-formed incorrect prefix, and mixing the two would bias OCB (paper Appendix B).
"""

from bae.tasks.answer_class import GROUP_OUTCOMES, answer_classes
from bae.tasks.answers import last_boxed
from bae.tasks.builtin import BUILTIN, RECORD, from_config, get, load, load_record, save_record
from bae.tasks.registry import BLOCK_REWARDS, OUTCOMES, BlockReward, Context, register_block_reward, register_outcome
from bae.tasks.schema import MALFORMED_POLICIES, SOLUTION_FORMATS, BlockSpec, TaskConfig
from bae.tasks.task import MALFORMED_OUTCOME, Score, Task

__all__ = ["BLOCK_REWARDS", "BUILTIN", "GROUP_OUTCOMES", "MALFORMED_OUTCOME", "MALFORMED_POLICIES", "OUTCOMES",
           "BlockReward", "BlockSpec", "Context", "RECORD", "SOLUTION_FORMATS", "Score", "Task", "TaskConfig",
           "answer_classes", "from_config", "get", "last_boxed", "load", "load_record", "register_block_reward",
           "register_outcome", "save_record"]
