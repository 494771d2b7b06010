"""The layers of docs/DESIGN.md "The controller", checked by folder and through every import chain:
the Kubernetes runtime (`k8s/`) knows nothing of ImagePullSecrets, `spec/` knows nothing else, the
pure decisions import no I/O, and a new module or folder cannot slip past a hand-kept list."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "controller" / "tcr_assistant"

# folder -> the other folders its modules may reach, directly or through others
LAYERS: dict[str, frozenset[str]] = {
    "k8s": frozenset(),
    "spec": frozenset(),
    "tcrtoken": frozenset({"spec"}),
    "reconciler": frozenset({"spec", "k8s", "tcrtoken"}),
    "admission": frozenset({"spec", "k8s", "reconciler", "tcrtoken"}),
    "servingcert": frozenset({"spec", "k8s"}),
    "hooks": frozenset({"spec", "k8s", "reconciler", "tcrtoken"}),
}
ROOT_MODULES = frozenset({"__init__", "cli", "app"})  # the entry point and the composition root: anything
# Decisions without I/O: they reach no k8s module and no I/O library, through any chain.
PURE = frozenset({"spec.api", "spec.rules", "spec.names", "spec.selectors", "spec.validation", "spec.hosts",
                  "spec.tokenfrom",
                  "reconciler.decisions", "reconciler.status", "reconciler.observed", "reconciler.keys",
                  "reconciler.credcheck", "reconciler.credentials", "tcrtoken.decision",
                  "admission.review", "admission.podreview", "servingcert.decision"})
IO_LIBRARIES = frozenset({"kubernetes", "urllib3", "socket", "socketserver", "ssl", "http.server", "http.client",
                          "subprocess", "threading", "prometheus_client", "cryptography", "tempfile", "signal"})


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def imports(path: Path, known: frozenset[str]) -> tuple[set[str], set[str]]:
    """(package modules, other modules) that ``path`` imports, functions included."""
    inside: set[str] = set()
    outside: set[str] = set()
    here = module_name(path).split(".")[:-1]  # the package a relative import starts from
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tcr_assistant."):
                    inside.add(alias.name.removeprefix("tcr_assistant."))
                else:
                    outside.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = here[: len(here) - (node.level - 1)]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module == "tcr_assistant" or node.module.startswith("tcr_assistant.")):
                module = node.module.removeprefix("tcr_assistant").lstrip(".")
            else:
                outside.update(f"{node.module}.{alias.name}" for alias in node.names)
                outside.add(node.module or "")
                continue
            for alias in node.names:  # `from pkg import module` names a module
                candidate = f"{module}.{alias.name}" if module else alias.name
                inside.add(candidate if candidate in known else module)
    inside.discard("")
    return {m for m in inside if m in known}, outside


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = frozenset(paths)
    edges: dict[str, set[str]] = {}
    libraries: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges[name], libraries[name] = imports(path, known)
    return edges, libraries


def reachable(edges: Mapping[str, set[str]], start: str) -> dict[str, str]:
    """Every module reachable from ``start`` -> the chain that reaches it ("a -> b -> c")."""
    chains = {start: start}
    todo = [start]
    while todo:
        current = todo.pop()
        for nxt in sorted(edges.get(current, ())):
            if nxt not in chains:
                chains[nxt] = f"{chains[current]} -> {nxt}"
                todo.append(nxt)
    del chains[start]
    return chains


def folder(module: str) -> str | None:
    head, _, rest = module.partition(".")
    return head if rest or head in LAYERS else None


def layer_violations(edges: Mapping[str, set[str]], libraries: Mapping[str, set[str]]) -> list[str]:
    """Every import chain that leaves what its module's folder may reach."""
    found: list[str] = []
    for module in sorted(edges):
        if module.split(".")[0] in ROOT_MODULES:
            continue
        home = folder(module)
        if home not in LAYERS:
            found.append(f"{module}: in no known layer folder (add it to LAYERS, with what it may import)")
            continue
        allowed = LAYERS[home] | {home}
        for target, chain in reachable(edges, module).items():
            if target.split(".")[0] in ROOT_MODULES or folder(target) not in allowed:
                found.append(f"{module} reaches {target}: {chain}")
            elif module in PURE and folder(target) == "k8s":
                found.append(f"{module} (pure) reaches {target}: {chain}")
        if module in PURE:
            for target in [module, *reachable(edges, module)]:
                used = {lib for lib in IO_LIBRARIES for name in libraries.get(target, set())
                        if name == lib or name.startswith(lib + ".")}
                if used:
                    found.append(f"{module} (pure) reaches I/O library {sorted(used)} through {target}")
    return found


def test_every_module_keeps_to_its_layer_through_every_import_chain() -> None:
    edges, libraries = graph()
    assert edges, "no module found"
    assert not layer_violations(edges, libraries)


def test_every_pure_module_exists() -> None:
    edges, _ = graph()
    assert sorted(PURE - set(edges)) == []


def test_a_violation_through_another_module_is_found() -> None:
    """The check itself: a runtime module that reaches the domain only through a second module,
    and a pure module that reaches an I/O library two steps away, are both reported."""
    edges = {"k8s.client": {"k8s.util"}, "k8s.util": {"spec.api"}, "spec.api": set(),
             "reconciler.decisions": {"reconciler.state"}, "reconciler.state": set(), "newfolder.x": set()}
    libraries = {"reconciler.state": {"threading", "threading.Lock"}}
    found = layer_violations(edges, libraries)
    assert any(line.startswith("k8s.client reaches spec.api: k8s.client -> k8s.util -> spec.api") for line in found)
    assert any("reconciler.decisions (pure) reaches I/O library ['threading']" in line for line in found)
    assert any(line.startswith("newfolder.x: in no known layer folder") for line in found)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_every_layer_folder_is_a_package_with_modules(layer: str) -> None:
    assert (PACKAGE / layer / "__init__.py").is_file()
    assert [p for p in (PACKAGE / layer).glob("*.py") if p.name != "__init__.py"]


def test_the_controller_process_never_imports_cryptography() -> None:
    """cryptography costs about 10 MiB of RSS: only servingcert/certificates.py imports it, and
    nothing imports that module (the keeper runs it as ``python -m tcr_assistant.servingcert.certificates``)."""
    edges, libraries = graph()
    assert sorted(m for m, libs in libraries.items()
                  if any(lib.split(".")[0] == "cryptography" for lib in libs)) == ["servingcert.certificates"]
    assert sorted(m for m, targets in edges.items() if "servingcert.certificates" in targets) == []


def test_the_controller_process_never_imports_the_tencent_cloud_sdk() -> None:
    """The SDK and requests (about 20 MiB) load only in ``python -m tcr_assistant.tcrtoken.helper``,
    which nothing imports (the minter runs it as a process of its own)."""
    edges, libraries = graph()
    assert sorted(m for m, libs in libraries.items()
                  if any(lib.split(".")[0] in ("tencentcloud", "requests", "certifi") for lib in libs)
                  ) == ["tcrtoken.helper"]
    assert sorted(m for m, targets in edges.items() if "tcrtoken.helper" in targets) == []


def test_no_module_is_over_400_lines() -> None:
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
