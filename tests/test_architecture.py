"""The shape of the code: packages imported only downwards, no cycles, no file over 800 lines."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from setuptools import find_namespace_packages, find_packages

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "commands", "adapters", "sandbox")

# bot/ from the bottom up: a module may import its own layer's and lower layers' modules, never higher.
BOT_LAYERS: list[tuple[str, ...]] = [
    ("bot.invocation", "bot.config", "bot.observability", "bot.concurrency"),
    ("bot.services", "bot.state"),
    ("bot.gate",),
    ("bot.render",),
    ("bot.slack",),
    ("bot.runners",),
    ("bot.registry",),
    ("bot.dispatch", "bot.runtime"),
    ("bot.listeners",),
    ("bot.web",),
    ("bot.cli",),
    ("bot.__main__",),
]
MAX_LINES = 800


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


# Calls that import a module named by a string, later: `Ref("bot.runners.health", "run")` in the
# registry, `importlib.import_module("...")`. Their first argument counts as an import.
LAZY_IMPORTS = {"Ref", "import_module"}


def _lazy_target(node: ast.Call) -> str | None:
    """Return the module a lazy import names, when `node` is one with a literal name."""
    function = node.func
    called = function.id if isinstance(function, ast.Name) else getattr(function, "attr", None)
    if called not in LAZY_IMPORTS or not node.args:
        return None
    first = node.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Return our modules that `name` imports anywhere (inside functions and TYPE_CHECKING too),
    lazy imports by name included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and (lazy := _lazy_target(node)) is not None:
            targets = [lazy]
        for target in targets:
            parts = target.split(".")
            for size in range(len(parts), 0, -1):
                candidate = ".".join(parts[:size])
                if candidate in known and candidate != name:
                    found.add(candidate)
                    break
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _layer(module: str) -> int | None:
    for index, layer in enumerate(BOT_LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in layer):
            return index
    return None


def test_every_bot_module_has_a_layer() -> None:
    unplaced = sorted(name for name in _modules() if name.startswith("bot.") and _layer(name) is None)
    assert unplaced == [], f"add these to BOT_LAYERS (and ARCHITECTURE.md): {unplaced}"


def test_bot_packages_are_imported_only_downwards() -> None:
    upwards = []
    for module, targets in _graph().items():
        here = _layer(module)
        for target in targets:
            there = _layer(target)
            if here is not None and there is not None and there > here:
                upwards.append(f"{module} -> {target}")
    assert upwards == []


def test_commands_and_adapters_never_import_bot() -> None:
    leaks = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if module.split(".")[0] in ("commands", "adapters")
        for target in targets
        if target.split(".")[0] == "bot"
    ]
    assert leaks == []


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            # A package's __init__ re-exporting its own children is not a cycle between concerns.
            root = min(component, key=len)
            if len(component) > 1 and not all(m == root or m.startswith(root + ".") for m in component):
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert cycles == []


def test_lazy_imports_by_name_are_seen_and_resolve() -> None:
    # The registry names its runners and renderers instead of importing them: the rules above must
    # still see those names (registry -> runners/render, downwards), and every name must exist.
    graph = _graph()
    assert {"bot.runners.health", "bot.render.health", "commands.health"} <= graph["bot.registry"]
    from bot.registry import COMMANDS

    for spec in COMMANDS.values():
        for part in ("usage", "run", "slack", "terminal", "execute", "tokenize", "role_for", "cost"):
            assert getattr(spec, part) is not None or part in ("execute", "role_for", "cost"), (spec, part)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_file_is_over_800_lines(package: str) -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_every_package_folder_has_an_init() -> None:
    # A folder without __init__.py is left out of the wheel and the image without a word.
    missing = [
        str(folder.relative_to(ROOT))
        for package in PACKAGES
        for folder in [ROOT / package, *(ROOT / package).rglob("*")]
        if folder.is_dir()
        and folder.name != "__pycache__"
        and any(folder.glob("*.py"))
        and not (folder / "__init__.py").exists()
    ]
    assert missing == []


def test_the_wheel_and_the_image_carry_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packaged = set(find_packages(where=str(ROOT), include=include))
    # Every folder holding Python code, as Python would import it, must be in the wheel.
    present = {
        name
        for name in find_namespace_packages(where=str(ROOT), include=include)
        if any((ROOT / name.replace(".", "/")).glob("*.py"))
    }
    assert present - packaged == set()
    copied = {
        line.split()[1].rstrip("/")
        for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.startswith("COPY ")
    }
    assert {name.split(".")[0] for name in packaged} | {"templates"} <= copied
