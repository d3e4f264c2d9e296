"""Every point at which a run can die while a checkpoint is being saved, for the resume tests.

A save is a sequence of writes into checkpoint-N: Python open() of each JSON or text file (the file
exists, empty, from that moment on: how an empty trainer_state.json comes about), torch.save of the
training arguments, optimizer, scheduler and RNG states, safetensors of the weights, then bae's
marker (a temporary file, then a rename). `watch(folder, on_point)` calls on_point(name, how) at
each of them, for writes into `folder`:
  "opened"        a file opened for writing, nothing in it yet;
  "half"          a binary file with half of its bytes on disk;
  "unmarked"      the trainer's save returned, bae's marker not written yet;
  "before-rename" the marker's temporary file is written, the rename has not happened.
Files written by native code we cannot reach from Python (the tokenizer's tokenizer.json) get no
point of their own; the next point sees them complete.

Run as a script, it is `bae` with a watch installed (for a subprocess that dies or records):
    python tests/savepoints.py --folder RUN/checkpoint-4 --kill-at trainer_state.json:opened -- train --config C
    python tests/savepoints.py --folder RUN/checkpoint-4 --record STATES -- train --config C
--kill-at ends the process with os._exit(137) at that point (no clean-up runs, as with SIGKILL);
--record copies the folder, as it is on disk, into STATES/NN-name-how at every point.
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import io
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock

_open = builtins.open
_replace = os.replace


@contextlib.contextmanager
def watch(folder: str | Path, on_point: Callable[[str, str], None]) -> Iterator[None]:
    import safetensors.torch
    import torch
    import transformers.modeling_utils

    import bae.runs.checkpoints

    folder = Path(folder).resolve()

    def inside(path) -> str | None:
        try:
            p = Path(os.fspath(path)).resolve()
        except TypeError:
            return None
        return str(p.relative_to(folder)) if p.is_relative_to(folder) else None

    def opened(file, mode="r", *args, **kwargs):
        f = _open(file, mode, *args, **kwargs)
        name = inside(file) if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wxa") else None
        if name is not None:
            on_point(name, "opened")
        return f

    def halfway(name: str, path, data: bytes) -> None:
        with _open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        on_point(name, "half")
        with _open(path, "wb") as f:
            f.write(data)

    real_torch_save = torch.save

    def torch_save(obj, f, *args, **kwargs):
        name = inside(f) if isinstance(f, (str, os.PathLike)) else None
        if name is None:
            return real_torch_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_torch_save(obj, buffer, *args, **kwargs)
        halfway(name, f, buffer.getvalue())

    def safe_save_file(tensors, filename, metadata=None):
        data = safetensors.torch.save(tensors, metadata=metadata)
        name = inside(filename)
        if name is None:
            with _open(filename, "wb") as f:
                f.write(data)
        else:
            halfway(name, filename, data)

    real_mark = bae.runs.checkpoints.mark_complete

    def mark_complete(path, step):
        if inside(path) == ".":
            on_point(bae.runs.checkpoints.MARKER, "unmarked")
        return real_mark(path, step)

    def replace(src, dst, *args, **kwargs):
        if inside(dst) == bae.runs.checkpoints.MARKER:
            on_point(bae.runs.checkpoints.MARKER, "before-rename")
        return _replace(src, dst, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch("builtins.open", opened))
        stack.enter_context(mock.patch("torch.save", torch_save))
        stack.enter_context(mock.patch.object(transformers.modeling_utils, "safe_save_file", safe_save_file))
        stack.enter_context(mock.patch("safetensors.torch.save_file", safe_save_file))
        stack.enter_context(mock.patch.object(bae.runs.checkpoints, "mark_complete", mark_complete))
        stack.enter_context(mock.patch("os.replace", replace))
        yield


def recorder(folder: Path, states: Path) -> Callable[[str, str], None]:
    """on_point that copies `folder` as it is on disk into states/NN-name-how."""
    count = [0]

    def on_point(name: str, how: str) -> None:
        target = states / f"{count[0]:02d}-{name.replace('/', '_')}-{how}"
        count[0] += 1
        shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".*"))

    return on_point


def killer(point: str) -> Callable[[str, str], None]:
    def on_point(name: str, how: str) -> None:
        if f"{name}:{how}" == point:
            os._exit(137)

    return on_point


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--kill-at")
    group.add_argument("--record")
    args, rest = parser.parse_known_args(argv)
    rest = rest[1:] if rest[:1] == ["--"] else rest
    folder = Path(args.folder)
    on_point = killer(args.kill_at) if args.kill_at else recorder(folder, Path(args.record))
    from bae.cli import app

    with watch(folder, on_point):
        app(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
