"""Final answers in free text: the last \\boxed{...}, the convention of math RL outputs (MATH's
solutions, Qwen-Math, DeepSeek-R1, most open reasoning models).

Model text is data: it is only scanned for braces, never evaluated."""

from __future__ import annotations

import re


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} or \fbox{...} (balanced braces), or of \boxed N; None if absent.

    The same rule as math-verify's boxed extraction (the last box wins) and as MATH's gold answers
    are cut from its solutions; the content is returned unstripped (callers strip it)."""
    if not isinstance(text, str):
        return None
    best, best_pos = None, -1
    for macro in ("\\boxed", "\\fbox"):
        pos = text.rfind(macro)
        while pos != -1:
            rest = text[pos + len(macro):]
            if rest.startswith("{"):
                depth = 0
                for i, ch in enumerate(rest):
                    depth += ch == "{"
                    depth -= ch == "}"
                    if depth == 0:
                        if pos > best_pos:
                            best, best_pos = rest[1:i], pos
                        break
                break
            if rest.startswith(" ") and macro == "\\boxed":
                m = re.match(r" +([^\s$]+)", rest)
                if m and pos > best_pos:
                    best, best_pos = m.group(1), pos
                break
            pos = text.rfind(macro, 0, pos)  # \boxedx... is another macro: look further back
    return best
