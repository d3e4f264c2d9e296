"""README.md's Python snippets run as written, and say what they claim."""

import re
from pathlib import Path

import numpy as np
import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def block(marker: str) -> str:
    found = [b for b in BLOCKS if marker in b]
    assert len(found) == 1, f"README has {len(found)} python blocks with {marker!r}"
    return found[0]


def test_the_core_snippet_runs_and_gives_ocb_advantages():
    """The "core in a few lines": block 2's OCB advantage is centred within each (group, outcome)
    stratum, and the per-token advantages carry A[i, k] n_i / n_ik on block k's tokens."""
    scope: dict = {}
    exec(compile(block("blockwise_advantages(r, group_ids, o"), "README.md", "exec"), scope)
    A, o, adv, ids = scope["A"], scope["o"], scope["adv"], scope["token_block_ids"]
    assert A.shape == (4, 2) and adv.shape == ids.shape
    for outcome in (0, 1):
        assert A[o[:, 1] == outcome, 1].sum() == pytest.approx(0.0, abs=1e-12)
    assert np.abs(A[:, 1]).max() > 0.01  # confidences differ within each stratum
    for i in range(4):
        n = np.bincount(ids[i][ids[i] >= 0], minlength=2)
        for k in range(2):
            np.testing.assert_allclose(adv[i][ids[i] == k].numpy(), A[i, k] * n.sum() / n[k], rtol=1e-6)


def test_the_task_yaml_shown_is_the_shipped_rlcr_task():
    """The YAML block of "Your own task" is configs/tasks/rlcr.yaml in every key, except the system
    prompt, which it abridges (and says so)."""
    import yaml

    shown = re.findall(r"```yaml\n(.*?)```", README, re.S)
    shown = [yaml.safe_load(b) for b in shown if b.startswith("name: rlcr")]
    assert len(shown) == 1
    shipped = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tasks" / "rlcr.yaml").read_text())
    assert shipped["system_prompt"].startswith(shown[0]["system_prompt"].removesuffix(" ..."))
    assert {k: v for k, v in shown[0].items() if k != "system_prompt"} == {
        k: v for k, v in shipped.items() if k != "system_prompt"}
