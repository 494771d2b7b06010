"""The direction of imports in the harness: a base module knows nothing of its subclasses (the control
plane of the node cluster; the command line of both lives in harness.cluster_cli), and no module
imports itself back through others, also not from inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "scripts" / "harness"
MODULES = {path.stem for path in HARNESS.glob("*.py")}


def harness_imports(path: Path) -> set[str]:
    """The harness modules ``path`` imports, wherever in the file the import stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("harness."))
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("harness."):
                names.add(node.module.split(".")[1])
            elif node.module == "harness":  # `from harness import tools`: the modules among the names
                names.update(alias.name for alias in node.names if alias.name in MODULES)
    return names


GRAPH = {module: harness_imports(HARNESS / f"{module}.py") for module in MODULES}


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for module in GRAPH[todo.pop()] - seen:
            seen.add(module)
            todo.append(module)
    return seen


def test_the_control_plane_does_not_import_the_node() -> None:
    assert "node" not in GRAPH["cluster"]
    assert "node" not in reachable("cluster")


def test_the_command_line_imports_both() -> None:
    assert {"cluster", "node"} <= GRAPH["cluster_cli"]
    assert "cluster" in GRAPH["node"]


def test_no_harness_module_imports_itself_back() -> None:
    assert [module for module in sorted(MODULES) if module in reachable(module)] == []


def test_the_check_sees_function_level_imports(tmp_path: Path) -> None:
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from harness.node import NodeCluster\n    import harness.oci\n"
                      "from harness import tools, REPO_ROOT\n")
    assert harness_imports(source) == {"node", "oci", "tools"}
