"""The dependency direction of docs/architecture.md, checked on the import statements.

Composition roots (cli, cmd/: the supervisor, entrypoint, check and the wiring) may import
anything; transports (ssh, api, the web console) never import each other; the Repour face (repour/) sits on api
(its auth and lookups) and only the composition root wires it (the route list and the
job-handler map of cmd/wiring.py); the push wing and the pipelines never import a transport or
Repour, and the hook entry never the pipelines; the core (git, db, policy, identity, net,
process, config, jsonshape) imports none of the layers above it, and observe/ (metrics, logs)
only the core. The git hooks' module imports only the standard library and the pure git rules at load
time, because every push starts it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gitserver"
ROOTS = ("gitserver.cli", "gitserver.cmd")
TRANSPORTS = ("gitserver.api", "gitserver.ssh", "gitserver.console")
WINGS = ("gitserver.push", "gitserver.pipelines", "gitserver.repour", "gitserver.admin", "gitserver.backup",
         "gitserver.shapes", "gitserver.lfs")
CORE = ("gitserver.git", "gitserver.db", "gitserver.policy", "gitserver.identity", "gitserver.net",
        "gitserver.process", "gitserver.config", "gitserver.jsonshape")

# module prefix -> prefixes it must not import
FORBIDDEN = {
    # Only the composition root (gitserver.cmd.wiring) wires Repour's routes and job handler.
    "gitserver.api": (*ROOTS, "gitserver.ssh", "gitserver.repour", "gitserver.console"),
    "gitserver.ssh": (*ROOTS, "gitserver.api", "gitserver.console"),
    "gitserver.console": (*ROOTS, "gitserver.api", "gitserver.ssh", "gitserver.repour"),
    "gitserver.push": (*ROOTS, *TRANSPORTS, "gitserver.repour"),
    "gitserver.pipelines": (*ROOTS, *TRANSPORTS, "gitserver.repour"),
    "gitserver.lfs": (*ROOTS, *TRANSPORTS, "gitserver.repour"),
    "gitserver.repour": (*ROOTS, "gitserver.ssh"),
    # The hook entry runs in git's hook process: it never loads the job engine.
    "gitserver.push.hookrun": ("gitserver.pipelines",),
    "gitserver.push.hookenv": ("gitserver.pipelines",),
    "gitserver.push.messages": ("gitserver.pipelines",),
    # Signing, the reference log and attestations sit beside the push wing: it and the
    # pipelines call them, never the reverse.
    "gitserver.provenance": (*ROOTS, *TRANSPORTS, *WINGS),
    "gitserver.observe": (*ROOTS, *TRANSPORTS, *WINGS),
    # The CLI's REST client runs on any machine: it imports none of the server's modules.
    "gitserver.client": (*ROOTS, *TRANSPORTS, *WINGS, *CORE, "gitserver.observe"),
    **{core: (*ROOTS, *TRANSPORTS, *WINGS, "gitserver.observe") for core in CORE},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """Every gitserver module ``path`` imports (``from a import b`` counts as a and a.b)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    module = module_name(path)
    banned = [b for layer, bans in FORBIDDEN.items() if within(module, layer) for b in bans]
    wrong = sorted(name for name in imports(path) for b in banned if within(name, b))
    assert not wrong, f"{module} imports {wrong}, above its layer (docs/architecture.md)"


# What the hooks' module and the modules it loads may import at load time, of gitserver's own.
HOOK_MODULES = {"gitserver.push.hookrun": "push/hookrun.py", "gitserver.push.hookenv": "push/hookenv.py",
                "gitserver.push": "push/__init__.py", "gitserver.push.messages": "push/messages.py",
                "gitserver.push.limits": "push/limits.py", "gitserver.push.admission": "push/admission.py",
                "gitserver.push.refmove": "push/refmove.py", "gitserver.provenance.loglock": "provenance/loglock.py",
                "gitserver.provenance.logmove": "provenance/logmove.py",
                "gitserver.provenance": "provenance/__init__.py"}
HOOK_ALLOWED = {"gitserver", "gitserver.git", "gitserver.git.protect", "gitserver.git.refs", "gitserver.push.limits",
                "gitserver.git.head", "gitserver.git.push_options", "gitserver.push.admission",
                "gitserver.push", "gitserver.push.messages", *HOOK_MODULES}


@pytest.mark.parametrize("module", sorted(HOOK_MODULES))
def test_the_hooks_load_only_the_standard_library_and_the_git_rules(module: str) -> None:
    loaded = imports(PACKAGE / HOOK_MODULES[module], top_level_only=True)
    ours = {name for name in loaded if within(name, "gitserver")}
    assert ours <= HOOK_ALLOWED, ours - HOOK_ALLOWED
    others = {name.partition(".")[0] for name in loaded} - {"gitserver", "__future__"}
    assert others <= set(sys.stdlib_module_names), others - set(sys.stdlib_module_names)


def import_graph() -> dict[str, set[str]]:
    """gitserver module → the gitserver modules it imports anywhere (function-level too)."""
    modules = {module_name(p): p for p in SOURCES}
    return {name: {dep for dep in imports(path) if dep in modules and dep != name}
            for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in graph[node]:
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_anywhere() -> None:
    # Function-level imports count too: a lazy import that closes a circle is still a circle
    # (api.app mounts openapi's document and openapi never imports app back; config parses the
    # sandbox's UID range itself; the hook's two ledgers share hookenv, not each other).
    assert not circles(import_graph()), f"import circles: {circles(import_graph())}"


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_a_circle_is_found() -> None:
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


RESOURCES = "gitserver.api.resources"


@pytest.mark.parametrize("path", sorted((PACKAGE / "api" / "resources").glob("*.py")), ids=lambda p: p.name)
def test_resource_modules_import_no_sibling(path: Path) -> None:
    # What several resources share (paths, fields, shapes) lives in api/paths.py and
    # api/shapes.py, so a resource module never borrows it from another resource.
    module = module_name(path)
    siblings = sorted(name for name in imports(path) if within(name, RESOURCES) and name != module
                      and name != RESOURCES)
    assert not siblings, f"{module} imports {siblings}: share it through gitserver.api.paths or .shapes"
