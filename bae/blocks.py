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
from typing import Any, Sequence

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


def token_block_ids(spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]],
                    stop_block: int | None = None) -> np.ndarray:
    """Block id of every token, given the blocks' character spans and the tokens' (start, end) offsets.

    A token belongs to the block that holds its first character. Zero-width tokens (special tokens
    such as end-of-sequence, whose offsets are (0, 0) or (n, n)) and tokens at or past the end of
    the text take the block of the token before them (the first block if none), so tokens after the
    last tag belong to the last block. Every token gets exactly one id in [0, K).

    ``stop_block``: the block the completion stopped in (Score.complete capped at K - 1). The
    zero-width tokens after the last token that covers text take it. This matters when a
    completion stops exactly at a block boundary: "<answer>7</answer>" + EOS leaves the
    confidence block out, and its EOS is the decision to leave it out, so EOS must carry that
    block's (worst) reward; by the rule above it would join the solution block, and the left-out
    block would have no token to carry its reward. (The character spans cannot tell this case from
    a solution block cut off at the end: both span the whole text.)
    """
    bounds = np.array([end for _, end in spans[:-1]], dtype=np.int64)  # block k ends at bounds[k]
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)  # [T, 2]
    own = np.searchsorted(bounds, off[:, 0], side="right")  # [T]: block of each token's first character
    wide = off[:, 1] > off[:, 0]  # [T]: tokens that cover text
    last_wide = np.maximum.accumulate(np.where(wide, np.arange(len(off)), -1))  # [T]: latest such token
    ids = np.where(last_wide >= 0, own[np.maximum(last_wide, 0)], 0)  # zero-width: the block before them
    if stop_block is not None and len(off):
        trailing = np.arange(len(off)) > last_wide[-1]  # [T]: after the last token that covers text
        ids = np.where(trailing, stop_block, ids)
    return ids


def block_starts(block_ids: Sequence[int], num_blocks: int) -> list[int]:
    """The first token of each block k >= 1 ([K - 1] ints in [0, T]; T for a block with no token),
    from the block ids of one completion's tokens (non-decreasing, as token_block_ids gives them)."""
    ids = np.asarray(block_ids, dtype=np.int64)
    return np.searchsorted(ids, np.arange(1, num_blocks), side="left").tolist()


def block_ids_from_starts(starts: Any, mask: Any) -> Any:
    """[N, T] block id of each token from the first token of each block k >= 1 (starts [N, K - 1])
    and the token mask [N, T] (-1 where the mask is 0): the inverse of block_starts, as torch."""
    import torch

    mask = torch.as_tensor(mask).bool()
    pos = torch.arange(mask.shape[1], device=mask.device)  # [T]
    starts = torch.as_tensor(starts, device=mask.device).reshape(mask.shape[0], -1)  # [N, K - 1]
    ids = (pos[None, None, :] >= starts[:, :, None]).sum(1)  # [N, T]
    return torch.where(mask, ids, torch.full_like(ids, -1))


# ---------------------------------------------------------------------------------------------
# Token offsets of sampled ids: the one algorithm every engine uses


def token_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The text of `ids` (decode with skip_special_tokens=True, as TRL and verl decode completions) and the
    (start, end) character span of every token in it.

    Spans come from decoding the ids themselves, never from re-encoding the text: a sampled
    sequence need not be the canonical encoding (a model may spell a tag letter by letter). Fastest
    path: each token decoded alone in one batched call, used when the pieces concatenate to the
    text (byte-level tokenizers, no character split across tokens). Next: incremental decoding over a short sliding window (as vLLM detokenises), ~2 small decodes
    per token; a token that completes nothing yet (a special token, the first bytes of a multi-byte
    character) shares the span of the text the next tokens complete, and tokens that never complete
    any text (EOS at the end) get an empty span at the end. If the pieces do not concatenate to the
    decoded text (a tokenizer whose decode is not concatenative), the exact fallback decodes every
    prefix (quadratic). Special tokens get empty spans; `token_block_ids` gives them the block of
    the token before them.
    """
    ids = [int(i) for i in ids]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        def decode(x):
            return backend.decode(x, skip_special_tokens=True)
    else:
        def decode(x):
            return tokenizer.decode(x, skip_special_tokens=True)
    offsets = _piece_offsets(backend, ids, text) if backend is not None else None
    if offsets is None:
        offsets = _incremental_offsets(decode, ids, text)
    if offsets is None:
        offsets = _prefix_offsets(lambda x: tokenizer.decode(x, skip_special_tokens=True), ids, len(text))
    return text, offsets


def _piece_offsets(backend: Any, ids: list[int], text: str) -> list[tuple[int, int]] | None:
    """Fastest path: every token decoded alone, in one batched call. Exact when the pieces
    concatenate to the text and none ends inside a multi-byte character (else None)."""
    pieces = backend.decode_batch([[i] for i in ids], skip_special_tokens=True)
    if "".join(pieces) != text or any("\ufffd" in p for p in pieces):
        return None
    offsets, pos = [], 0
    for piece in pieces:
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    return offsets


def _incremental_offsets(decode, ids: list[int], text: str) -> list[tuple[int, int]] | None:
    offsets: list[tuple[int, int]] = []
    pos = prefix = read = 0
    old = ""  # decode(ids[prefix:read])
    for t in range(len(ids)):
        new = decode(ids[prefix : t + 1])
        if len(new) > len(old) and new.startswith(old) and not new.endswith("\ufffd"):
            piece = new[len(old) :]
            if text[pos : pos + len(piece)] != piece:
                return None
            offsets.extend([(pos, pos + len(piece))] * (t + 1 - len(offsets)))  # pending tokens share it
            pos += len(piece)
            prefix, read = read, t + 1
            old = decode(ids[prefix:read])
    if pos != len(text):
        return None
    offsets.extend([(pos, pos)] * (len(ids) - len(offsets)))
    return offsets


def _prefix_offsets(decode, ids: list[int], length: int) -> list[tuple[int, int]]:
    offsets, end = [], 0
    for t in range(len(ids)):
        start = end
        end = max(end, min(len(decode(ids[: t + 1])), length))
        offsets.append((start, end))
    return offsets
