"""The house rules: search's packages import downwards only, and every face keeps its promises.

`upward_imports` reads the source with `ast`, so an import inside a function counts as much as
one at the top of a module.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Bottom to top: a package may import those before it, never one after it.
ORDER = (
    "config",
    "measure",
    "serving",
    "cluster",
    "inputs",
    "study",
    "front",
    "tracking",
    "monitor",
    "commands",
)
# monitor and tracking are siblings: neither imports the other.
SIBLINGS = {("monitor", "tracking"), ("tracking", "monitor")}


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted module) for every absolute import, `from search import x` as `search.x`."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "search":
                found += [(node.lineno, f"search.{alias.name}") for alias in node.names]
    return found


def upward_imports(root: Path, order: tuple[str, ...] = ORDER) -> list[str]:
    """Each import that breaks the layering, as `file:line imports what`."""
    rank = {name: i for i, name in enumerate(order)}
    broken = []
    tops = ("search", "lightning_modules", "pruning")
    paths = [p for top in tops for p in (root / top).rglob("*.py")]
    for path in sorted(paths):
        parts = path.relative_to(root).parts
        top = parts[0]
        own = parts[1] if top == "search" and len(parts) > 2 else None
        for line, module in _imported(ast.parse(path.read_text(), str(path))):
            names = module.split(".")
            where = f"{path.relative_to(root)}:{line} imports {module}"
            if names[0] == "search" and top in ("lightning_modules", "pruning"):
                broken.append(where)
            elif names[0] == "lightning_modules" and top == "lightning_modules":
                continue
            elif names[0] == "search" and own is not None and len(names) > 1:
                other = names[1]
                if other in rank and (rank[other] > rank[own] or (own, other) in SIBLINGS):
                    broken.append(where)
    return broken


def test_search_packages_import_downwards_only() -> None:
    assert upward_imports(ROOT) == []


def test_the_check_fails_on_an_upward_import(tmp_path: Path) -> None:
    for package, source in {
        "config": "from search.study import StudySettings\n",
        "study": "from search.config import Config\n",
        "monitor": "def late():\n    from search.tracking.registry import promote\n",
    }.items():
        folder = tmp_path / "search" / package
        folder.mkdir(parents=True)
        (folder / "module.py").write_text(source)
    (tmp_path / "pruning").mkdir()
    (tmp_path / "pruning" / "plan.py").write_text("import search.config\n")
    assert upward_imports(tmp_path) == [
        "pruning/plan.py:1 imports search.config",
        "search/config/module.py:1 imports search.study",
        "search/monitor/module.py:2 imports search.tracking.registry",
    ]


def test_search_holds_only_packages() -> None:
    loose = sorted(p.name for p in (ROOT / "search").glob("*.py"))
    assert loose == ["__init__.py", "__main__.py"]
    assert sorted(p.parent.name for p in (ROOT / "search").glob("*/__init__.py")) == sorted(ORDER)


@pytest.mark.parametrize("package", ORDER)
def test_every_name_a_face_lists_resolves(package: str) -> None:
    face = importlib.import_module(f"search.{package}")
    assert face.__all__, package
    missing = [name for name in face.__all__ if getattr(face, name, None) is None]
    assert missing == []


def test_help_imports_neither_torch_nor_mlflow() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from search.commands import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'optuna') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
