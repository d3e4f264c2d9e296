"""The math-verify worker process behind bae.verify (run as `python -m bae.verify.worker`).

Reads JSON lines [prediction, gold] on stdin, writes "1" or "0" per line on stdout. It lives in its
own process so that the caller can kill it when a comparison runs past its time limit (math-verify's
own limits rely on signals, which only work in a main thread), and its address space is capped so a
huge number ends in MemoryError, not in the machine running out of memory. Before math-verify
compares, an exact pre-check (bae.verify.magnitude.provably_unequal) answers False at once for a
prediction that is a number too large to match the gold, such as a power tower, which math-verify
would otherwise spend the whole time limit evaluating.
"""

import json
import os
import resource
import sys

MEMORY_LIMIT = 4 << 30  # bytes


def equal(prediction: str, gold: str) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    from bae.verify.magnitude import provably_unequal

    # LaTeX extraction only: the plain-expression extractor goes through sympy's parse_expr (eval).
    latex = [LatexExtractionConfig()]
    if "\\boxed" not in prediction:
        prediction = "\\boxed{" + prediction + "}"
    gold_parsed = parse("$" + gold + "$", extraction_config=latex, parsing_timeout=None)
    pred_parsed = parse(prediction, extraction_config=latex, parsing_timeout=None)
    if not gold_parsed or not pred_parsed or provably_unequal(gold_parsed, pred_parsed):
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    # Answers go to a private copy of stdout; whatever a library prints lands on stderr, so a
    # stray line can never be read as an answer.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    import bae.verify.magnitude  # noqa: F401  (imports sympy; with math-verify, once, before "ready")
    import math_verify  # noqa: F401

    answers.write("ready\n")
    answers.flush()
    for line in sys.stdin:
        try:
            prediction, gold = json.loads(line)
            result = equal(str(prediction), str(gold))
        except BaseException:  # any failure to parse or compare means "not equal"
            result = False
        answers.write("1\n" if result else "0\n")
        answers.flush()


if __name__ == "__main__":
    main()
