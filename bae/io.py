"""Atomic writes and JSON Lines reading, shared by every command that writes a report or a model.

A reader (or a resumed run) never sees half a file or half a folder: files are written to a
temporary name in the same folder and renamed; folders are built under a temporary name and
swapped in.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name in the folder of `path` for a writer that takes a file name (pyarrow,
    matplotlib, torch); renamed onto `path` when the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path`: a temporary file in the same folder, then os.replace."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def temporary_dir_for(path: str | os.PathLike) -> Path:
    """An empty folder beside `path` (same file system, so it can be renamed onto it)."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))


def replace_dir(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Swap the finished folder `tmp` in as `path`. A folder cannot be renamed over a non-empty
    one, so an existing `path` is first moved aside, then removed."""
    tmp, path = Path(tmp), Path(path).resolve()
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, old / "x")
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path


def json_lines(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; `error` names the file and line of a line
    that is not a JSON object."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{number}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            yield number, row


def save_pretrained_dir(path: str | os.PathLike, *parts, files: dict[str, str] | None = None) -> Path:
    """Save Hugging Face objects (anything with save_pretrained: a model, a tokenizer) and extra
    text files into the folder `path`, atomically; an existing folder is replaced."""
    tmp = temporary_dir_for(path)
    try:
        for part in parts:
            part.save_pretrained(tmp)
        for name, text in (files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")
        return replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
