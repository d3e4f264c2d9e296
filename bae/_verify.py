"""The math-verify worker process behind bae.rewards.math_equal (run as `python -m bae._verify`).

Reads JSON lines [prediction, gold] on stdin, writes "1" or "0" per line on stdout. It lives in its
own process so that the caller can kill it when a comparison runs past its time limit (math-verify's
own limits rely on signals, which only work in a main thread), and its address space is capped so a
huge number (a power tower) ends in MemoryError, not in the machine running out of memory.
"""

import json
import resource
import sys

MEMORY_LIMIT = 4 << 30  # bytes


def equal(prediction: str, gold: str) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    # LaTeX extraction only: the plain-expression extractor goes through sympy's parse_expr (eval).
    latex = [LatexExtractionConfig()]
    if "\\boxed" not in prediction:
        prediction = "\\boxed{" + prediction + "}"
    gold_parsed = parse("$" + gold + "$", extraction_config=latex, parsing_timeout=None)
    pred_parsed = parse(prediction, extraction_config=latex, parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    import math_verify  # noqa: F401  (import once, before saying ready)

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            prediction, gold = json.loads(line)
            result = equal(str(prediction), str(gold))
        except BaseException:  # any failure to parse or compare means "not equal"
            result = False
        out.write("1\n" if result else "0\n")
        out.flush()


if __name__ == "__main__":
    main()
