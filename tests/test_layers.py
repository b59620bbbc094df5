"""The import contract (`make lint` runs this file): layers only import downwards, the service never
reaches torch, timm, training or models, not even through a function-level import, and no modules
import each other in a circle (function-level imports count: a lazy import does not break a loop of
responsibilities, it hides it).

The layers, top to bottom, are drawn in docs/architecture.md. Modules of one layer that sit side by
side (serving and runs; training and export) do not import each other. Imports under
``if TYPE_CHECKING:`` are annotations, not edges; the package's lazy attributes (``seedlings.train``,
``seedlings.load_model`` in seedlings/__init__.py's ``__getattr__``) are the public facade and the
one exception.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[dict[str, tuple[str, ...]]] = [  # top first; per layer its groups, each a list of module prefixes
    {"cli": ("seedlings.cli", "seedlings.__main__", "seedlings.api")},
    {"serving": ("seedlings.serving",), "runs": ("seedlings.runs",), "batch": ("seedlings.batch",),
     "promotion": ("seedlings.promotion",)},  # promote's comparison (the registry itself is core)
    {"feedback": ("seedlings.feedback",)},  # the corrections store: the service and the CLI use it
    {"training": ("seedlings.training",), "export": ("seedlings.export",)},
    {"evaluation": ("seedlings.evaluation",)},
    {"config": ("seedlings.config",)},
    {"models": ("seedlings.models",)},
    {"inference": ("seedlings.inference",)},
    {"data": ("seedlings.data",)},
    {"core": ("seedlings.artifact", "seedlings.preprocess", "seedlings.images", "seedlings.fileio",
              "seedlings.errors", "seedlings.tables", "seedlings.progress", "seedlings.cpus", "seedlings.registry",
              "seedlings")},
]
SERVING_NEVER_REACHES = ("torch", "torchvision", "timm", "seedlings.training", "seedlings.models")


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(tree: ast.AST, module: str, known: set[str]) -> set[str]:
    """Every module ``module`` imports, at any depth, except annotation-only and facade imports."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if module == "seedlings" and isinstance(child, ast.FunctionDef) and child.name == "__getattr__":
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                found.add(child.module)
                found.update(f"{child.module}.{a.name}" for a in child.names if f"{child.module}.{a.name}" in known)
            visit(child)

    visit(tree)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    files = {module_name(p, src): p for p in (src / "seedlings").rglob("*.py")}
    return {m: imports_of(ast.parse(p.read_text(encoding="utf-8")), m, set(files)) for m, p in files.items()}


def group_of(module: str) -> tuple[int, str] | None:
    """(layer index, group name) of a seedlings module: the group with the longest prefix that names it."""
    best, longest = None, -1
    for i, layer in enumerate(LAYERS):
        for group, prefixes in layer.items():
            for prefix in prefixes:
                named = module == prefix or (prefix != "seedlings" and module.startswith(prefix + "."))
                if named and len(prefix) > longest:
                    best, longest = (i, group), len(prefix)
    return best


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for module, targets in sorted(graph.items()):
        mine = group_of(module)
        if mine is None:
            out.append(f"{module}: in no layer (add it to LAYERS in tests/test_layers.py and docs/architecture.md)")
            continue
        for target in sorted(t for t in targets if t == "seedlings" or t.startswith("seedlings.")):
            theirs = group_of(target)
            if theirs is None or theirs[1] == mine[1]:
                continue
            if theirs[0] < mine[0]:
                out.append(f"{module} imports {target}: a higher layer")
            elif theirs[0] == mine[0]:
                out.append(f"{module} imports {target}: a sibling of the same layer")
    return out


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module importing ``start`` may load, with the module that imports it (packages' __init__ too)."""
    seen, todo = {start: ""}, [start]
    while todo:
        module = todo.pop()
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        for target in [*graph.get(module, ()), *parents]:
            if target not in seen:
                seen[target] = module
                if target in graph:
                    todo.append(target)
    return seen


def serving_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for start in sorted(m for m in graph if m == "seedlings.serving" or m.startswith("seedlings.serving.")):
        for target, via in reachable(graph, start).items():
            if any(target == f or target.startswith(f + ".") for f in SERVING_NEVER_REACHES):
                out.append(f"{start} reaches {target} (imported by {via})")
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other in a circle: each module with those it reaches and that
    reach it back (a few hundred modules: plain reachability is fast enough and easy to check)."""
    edges = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in edges[todo.pop()] - seen:
                seen.add(target)
                todo.append(target)
        return seen

    reaches = {m: reach(m) for m in edges}
    groups = {tuple(sorted({m} | {o for o in reaches[m] if m in reaches[o]})) for m in edges if m in reaches[m]}
    return sorted(list(g) for g in groups)


def test_no_import_cycles():
    assert import_cycles(import_graph()) == []


def test_layers_only_import_downwards():
    assert layer_violations(import_graph()) == []


def test_the_service_never_reaches_torch_training_or_models():
    assert serving_violations(import_graph()) == []


def test_the_contract_fails_on_an_upward_import_and_on_torch_in_the_service(tmp_path):
    """The checks above can fail: one upward import and one path from serving to torch, planted in a copy."""
    shutil.copytree(SRC / "seedlings", tmp_path / "seedlings", ignore=shutil.ignore_patterns("default_model",
                                                                                              "static"))
    with open(tmp_path / "seedlings" / "data" / "index.py", "a") as fh:
        fh.write("\n\ndef _upward():\n    from seedlings.evaluation.report import evaluate  # noqa\n")
    with open(tmp_path / "seedlings" / "inference.py", "a") as fh:
        fh.write("\n\ndef _torch():\n    from seedlings.models.backend import TorchBackend  # noqa\n")
    graph = import_graph(tmp_path)
    assert "seedlings.data.index imports seedlings.evaluation.report: a higher layer" in layer_violations(graph)
    reached = serving_violations(graph)
    assert "seedlings.serving.predictor reaches seedlings.models.backend (imported by seedlings.inference)" \
        in reached
    assert any(r.startswith("seedlings.serving.predictor reaches torch ") for r in reached)


def test_the_cycle_check_fails_on_a_planted_cycle(tmp_path):
    shutil.copytree(SRC / "seedlings", tmp_path / "seedlings", ignore=shutil.ignore_patterns("default_model",
                                                                                              "static"))
    with open(tmp_path / "seedlings" / "serving" / "errors.py", "a") as fh:
        fh.write("\n\ndef _loop():\n    from seedlings.serving.predictor import Predictor  # noqa\n")
    assert ["seedlings.serving.errors", "seedlings.serving.predictor"] in import_cycles(import_graph(tmp_path))
