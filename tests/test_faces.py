"""Names are imported from their one home: through the `lightning_modules.networks` face where
it hands them on, and `read_table` from `lightning_modules.tables` alone."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning_modules.networks

ROOT = Path(__file__).resolve().parent.parent
TOPS = ("search", "pruning", "lightning_modules", "tests", "bench")


def _from_imports(root: Path) -> list[tuple[str, str, list[str]]]:
    """(file:line, module, names) for every absolute `from X import names` under TOPS."""
    found = []
    for top in TOPS:
        for path in sorted((root / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    where = f"{path.relative_to(root)}:{node.lineno}"
                    found.append((where, node.module, [a.name for a in node.names]))
    return found


def past_the_networks_face(root: Path, face: set[str]) -> list[str]:
    """Imports from a module inside `lightning_modules.networks` of a name the face exports."""
    return [
        f"{where} {module}.{name}"
        for where, module, names in _from_imports(root)
        if module.startswith("lightning_modules.networks.")
        and not where.startswith("lightning_modules/networks/")
        for name in names
        if name in face
    ]


def test_network_names_come_through_the_face() -> None:
    face = set(lightning_modules.networks.__all__)
    assert past_the_networks_face(ROOT, face) == []


def test_the_face_check_finds_an_import_past_it(tmp_path: Path) -> None:
    (tmp_path / "pruning").mkdir()
    (tmp_path / "pruning" / "plan.py").write_text(
        "from lightning_modules.networks.base import NetworkSpec, unit_values\n"
    )
    found = past_the_networks_face(tmp_path, {"NetworkSpec"})
    assert found == ["pruning/plan.py:1 lightning_modules.networks.base.NetworkSpec"]


def test_read_table_has_one_home() -> None:
    homes = {module for _, module, names in _from_imports(ROOT) if "read_table" in names}
    assert homes == {"lightning_modules.tables"}


def test_task_has_one_home() -> None:
    homes = {module for _, module, names in _from_imports(ROOT) if "Task" in names}
    assert homes == {"lightning_modules.task"}
