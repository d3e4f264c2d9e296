"""Block schemas: split a completion's text into blocks, and map its tokens to blocks.

A schema is an ordered list of blocks; each block is an ordered list of tagged fields, e.g.

    solution   = <reasoning>...</reasoning><answer>...</answer>
    confidence = <analysis>...</analysis><confidence>...</confidence>

A completion is well-formed when its tags are exactly the schema's tag sequence, each tag once, in
order, with only whitespace outside the fields. The blocks' character spans partition the text:
block 1 starts at 0, each block ends where its last closing tag ends, and the last block runs to the
end of the text (so trailing text and end-of-sequence tokens belong to it).

Malformed completions (missing, reordered, nested or repeated tags, stray text, truncation) never
raise. `split` scans the tags in order and keeps the longest well-formed prefix of whole blocks:
those blocks are `complete` and their fields are read; the rest of the text belongs to the first
incomplete block, and later blocks are empty spans at the end. What a task does with incomplete
blocks is its malformed policy (see bae.tasks): by default they get the worst reward of their block.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Block:
    """One block of a completion: a name and its tagged fields in order."""

    name: str
    fields: tuple[str, ...]

    def __post_init__(self):
        if not self.fields:
            raise ValueError(f"block {self.name!r} needs at least one field")
        for f in self.fields:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", f):
                raise ValueError(f"block {self.name!r}: field {f!r} is not a valid tag name")


@dataclass(frozen=True)
class Split:
    """The result of splitting a completion.

    spans: one (start, end) character span per block, partitioning [0, len(text)).
    complete: how many leading blocks are well-formed (== number of blocks when the text is).
    fields: per block, {field name: stripped content}, for the complete blocks only.
    """

    spans: tuple[tuple[int, int], ...]
    complete: int
    fields: tuple[dict[str, str], ...]
    num_blocks: int

    @property
    def well_formed(self) -> bool:
        return self.complete == self.num_blocks


@dataclass(frozen=True)
class BlockSchema:
    blocks: tuple[Block, ...]
    _tag_re: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.blocks:
            raise ValueError("a block schema needs at least one block")
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"block names must be unique, got {names}")
        tags = sorted({f for b in self.blocks for f in b.fields}, key=len, reverse=True)
        object.__setattr__(self, "_tag_re", re.compile(r"<(/?)(" + "|".join(map(re.escape, tags)) + r")>"))

    @classmethod
    def of(cls, **blocks: Sequence[str]) -> "BlockSchema":
        """BlockSchema.of(solution=("reasoning", "answer"), confidence=("analysis", "confidence"))."""
        return cls(tuple(Block(name, tuple(fields)) for name, fields in blocks.items()))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def render(self, contents: Sequence[dict[str, str]]) -> str:
        """The well-formed text of the given field contents, one dict per block."""
        return "".join(f"<{f}>{c[f]}</{f}>" for b, c in zip(self.blocks, contents) for f in b.fields)

    def split(self, text: str) -> Split:
        """Split `text` into block spans; never raises (see the module docstring)."""
        n = len(text)
        expected = [(b, f, closing) for b in range(len(self.blocks)) for f in self.blocks[b].fields for closing in (False, True)]
        tags = list(self._tag_re.finditer(text))
        complete, ends, fields = 0, [], []
        pos = 0  # index into expected
        current: dict[str, str] = {}
        cursor = 0  # end of the last tag consumed
        for m in tags:
            if pos >= len(expected):
                break  # an extra tag after the last block: the last block is not well-formed
            b, name, closing = expected[pos]
            if (m.group(1) == "/") != closing or m.group(2) != name:
                break
            gap = text[cursor:m.start()]
            if closing:
                current[name] = gap.strip()
            elif gap.strip():
                break  # stray text outside the fields
            cursor, pos = m.end(), pos + 1
            if closing and name == self.blocks[b].fields[-1]:
                complete += 1
                ends.append(cursor)
                fields.append(current)
                current = {}
        if complete == len(self.blocks):
            rest = text[ends[-1]:]
            if rest.strip() or self._tag_re.search(rest):
                # trailing text is allowed only as whitespace: anything else (a repeated tag,
                # a second answer) makes the last block incomplete
                complete -= 1
                ends.pop()
                fields.pop()
        starts = [0] + ends
        spans = []
        for k in range(len(self.blocks)):
            if k < complete:
                spans.append((starts[k], ends[k]))
            elif k == complete:
                spans.append((starts[k], n))
            else:
                spans.append((n, n))
        if complete == len(self.blocks):  # the last block owns the trailing whitespace
            spans[-1] = (spans[-1][0], n)
        return Split(tuple(spans), complete, tuple(fields), len(self.blocks))


def token_block_ids(spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Block id of every token, given the blocks' character spans and the tokens' (start, end) offsets.

    A token belongs to the block that holds its first character. Zero-width tokens (special tokens
    such as end-of-sequence, whose offsets are (0, 0) or (n, n)) and tokens at or past the end of
    the text take the block of the token before them (the first block if none), so tokens after the
    last tag belong to the last block. Every token gets exactly one id in [0, K).
    """
    bounds = np.array([end for _, end in spans[:-1]], dtype=np.int64)  # block k ends at bounds[k]
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)  # [T, 2]
    own = np.searchsorted(bounds, off[:, 0], side="right")  # [T]: block of each token's first character
    wide = off[:, 1] > off[:, 0]  # [T]: tokens that cover text
    last_wide = np.maximum.accumulate(np.where(wide, np.arange(len(off)), -1))  # [T]: latest such token
    ids = np.where(last_wide >= 0, own[np.maximum(last_wide, 0)], 0)  # zero-width: the block before them
    return ids
