"""The package's layers import downwards only (README, "Layout"):

    core (bae.io, blocks, rewards, advantages, objective, metrics, batch, paper, tasks, verify)
      <- engines (bae.engines), evaluation (bae.evaluation)
      <- fidelity (bae.fidelity), runs (bae.runs)
      <- embedded (bae.embedded)
      <- cli (bae.cli)

Every `import bae...` / `from bae... import` in every module, at any depth (function-level imports
included), is checked: a module may import its own package and any lower layer, never a higher
layer nor a sibling package of its own layer (engines and evaluation are independent, so are
fidelity and runs)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "bae"
LAYERS = {"engines": 1, "evaluation": 1, "fidelity": 2, "runs": 2, "embedded": 3, "cli": 4}


def unit(module: str) -> str:
    """The layer unit of a dotted module name: its first part under bae ("core" for the rest)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def imports(path: Path) -> set[str]:
    """Every bae module `path` imports (absolute imports: the package uses no relative ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "bae"}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if (node.module or "").split(".")[0] == "bae":
                found.add(node.module)
                if node.module == "bae":  # from bae import tasks, embedded, ...
                    found |= {f"bae.{a.name}" for a in node.names}
    return found


def test_layers_import_downwards_only():
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        modules[name] = path
    assert {"bae.advantages", "bae.engines.trl", "bae.evaluation", "bae.runs.train", "bae.embedded.demo", "bae.cli"} <= set(modules)
    wrong = []
    for name, path in sorted(modules.items()):
        mine = unit(name)
        for target in sorted(imports(path)):
            theirs = unit(target)
            if theirs == mine or theirs == "core":
                continue
            if mine == "core" or LAYERS[theirs] >= LAYERS[mine]:
                wrong.append(f"{name} ({mine}) imports {target} ({theirs})")
    assert wrong == [], "\n".join(wrong)


def test_the_check_sees_a_violation():
    """The checker itself: an evaluation module importing the embedded harness is reported."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write("def f():\n    from bae.embedded.tiny import build_model\n")
    found = imports(Path(f.name))
    assert "bae.embedded.tiny" in found and unit("bae.embedded.tiny") == "embedded"
    assert LAYERS[unit("bae.embedded.tiny")] > LAYERS[unit("bae.evaluation.sampling")]
