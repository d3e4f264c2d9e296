"""Which checkpoint a resumed run may start from: only one whose save finished.

transformers writes checkpoint-N in place, file by file (weights, optimizer, scheduler, RNG states,
trainer_state.json), and TRL writes entropy_ctrl_state.json after that; a file exists from the
moment it is opened, before anything is written into it. A run killed during a save therefore leaves
a folder that looks like a checkpoint but is not one (an empty trainer_state.json, a truncated
optimizer.pt, no RNG state). So bae writes a marker, `bae_checkpoint.json`, atomically, after the
whole save, listing every file of the checkpoint with its size; a checkpoint counts only when
its marker is there, every file it lists has that size, and its trainer_state.json parses and names
the checkpoint's own step. `last_checkpoint` returns the newest such checkpoint and, for every newer
folder it passed over, the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from bae.io import atomic_write_text

MARKER = "bae_checkpoint.json"
PREFIX = "checkpoint-"


def _step(folder: Path) -> int | None:
    tail = folder.name[len(PREFIX):]
    return int(tail) if folder.name.startswith(PREFIX) and tail.isdigit() else None


def mark_complete(folder: str | Path, step: int) -> Path:
    """Write the marker of a finished save: {"step", "files": {relative path: size in bytes}}."""
    folder = Path(folder)
    files = {str(p.relative_to(folder)): p.stat().st_size
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MARKER and not p.name.startswith(f".{MARKER}")}
    atomic_write_text(folder / MARKER, json.dumps({"step": int(step), "files": files}, indent=1) + "\n")
    return folder / MARKER


def incomplete_reason(folder: str | Path) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is one."""
    folder = Path(folder)
    step = _step(folder)
    if step is None:
        return "not named checkpoint-<step>"
    try:
        marker = json.loads((folder / MARKER).read_text())
        files, marked_step = dict(marker["files"]), int(marker["step"])
    except FileNotFoundError:
        return f"no {MARKER} (the save did not finish)"
    except (ValueError, KeyError, TypeError):
        return f"{MARKER} is not readable"
    if marked_step != step:
        return f"{MARKER} names step {marked_step}"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the save wrote {size}"
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except FileNotFoundError:
        return "trainer_state.json is missing"
    except ValueError:
        return "trainer_state.json is not valid JSON"
    if not isinstance(state, dict) or state.get("global_step") != step:
        return f"trainer_state.json is for step {state.get('global_step') if isinstance(state, dict) else None}"
    return None


@dataclass(frozen=True)
class Resume:
    """The checkpoint to resume from (None if there is none) and the newer folders passed over."""

    checkpoint: str | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(folder, reason) of every checkpoint-N newer than `checkpoint` that is incomplete."""


def last_checkpoint(out: str | Path) -> Resume:
    """The newest complete checkpoint-N of `out` (see the module docstring)."""
    out = Path(out)
    folders = sorted((p for p in out.glob(f"{PREFIX}*") if p.is_dir() and _step(p) is not None), key=_step, reverse=True)
    skipped = []
    for folder in folders:
        reason = incomplete_reason(folder)
        if reason is None:
            return Resume(str(folder), skipped)
        skipped.append((str(folder), reason))
    return Resume(None, skipped)


def marker_callback():
    """A TrainerCallback that marks each checkpoint complete once the trainer's save returned
    (on_save runs after _save_checkpoint, TRL's entropy state included); every process waits for
    the others first, so the files of all ranks are on disk before the marker."""
    from transformers import TrainerCallback

    class MarkComplete(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            if state.is_world_process_zero:
                mark_complete(Path(args.output_dir) / f"{PREFIX}{state.global_step}", state.global_step)

    return MarkComplete()
