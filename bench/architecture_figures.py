"""Figures of the source tree that the architecture issue tracks (prints them; never asserted).

- function-level imports in src/seedlings (imports inside a function or class body: edges a reader does not see)
- the longest parameter lists
- files that read model.json themselves instead of through artifact.ModelFile: they open the file, or
  spell its fields out on the raw dict (``meta["classes"]``, ``meta.get("unknown")``…)
- the largest files

    python bench/architecture_figures.py [SRC_DIR]
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "seedlings"
FIELDS = "classes|preprocess|unknown|calibration|files|training|metrics|image_size|backbone|source_run|params"
RAW_READ = re.compile(rf'\b(meta|metas\[\d\]|base)(\[|\.get\()"({FIELDS})"|model\.json"\)\.read_text'
                      r'|read_json\([^)]*model\.json|load_metadata\(')


def nested_imports(tree: ast.AST) -> int:
    count = 0

    def walk(node: ast.AST, depth: int) -> None:
        nonlocal count
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and depth:
                count += 1
            walk(child, depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))

    walk(tree, 0)
    return count


def parameter_counts(tree: ast.AST, where: str) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
            n -= bool(a.args and a.args[0].arg in ("self", "cls"))
            out.append((n, f"{where}:{node.name}"))
    return out


def main(src: Path = SRC) -> None:
    nested, params, readers, sizes = 0, [], [], []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        where = str(path.relative_to(src.parent))
        nested += nested_imports(tree)
        params += parameter_counts(tree, where)
        sizes.append((len(text.splitlines()), where))
        if path.name != "artifact.py" and RAW_READ.search(text):
            readers.append(where)
    params.sort(reverse=True)
    sizes.sort(reverse=True)
    print(f"function-level imports: {nested}")
    print("longest parameter lists: " + ", ".join(f"{w} ({n})" for n, w in params[:3]))
    print(f"files that read model.json directly: {len(readers)} " + " ".join(readers))
    print("largest files: " + ", ".join(f"{w} ({n} lines)" for n, w in sizes[:3]))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC)
