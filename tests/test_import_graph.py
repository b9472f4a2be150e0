"""The rooms of the code and what each may import, read off the source (every import statement,
also those inside functions and `if TYPE_CHECKING:`), so a rule broken anywhere fails here.

- No cycle between the project's packages, and none between modules at import time.
- The daemon's packages (and the formats and the teacher's tools) never import `hwsim`: the
  simulator plugs in through the `classcam.hardware` entry point.
- `formats` and `teacher_tools` (the distribution `classcam-teacher`) import only each other, the
  standard library less its POSIX-only and Windows-only modules, and the dependencies
  dist/teacher/pyproject.toml declares: they install on a teacher's Windows or macOS computer.
"""
from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("appliance", "capture", "uploader", "led_indicator", "formats", "teacher_tools",
            "pinpad", "hwsim", "tests")
DAEMON = ("appliance", "capture", "uploader", "led_indicator")
TEACHER = ("formats", "teacher_tools")
# Standard-library modules that exist on one family of systems only.
PLATFORM_ONLY = {"fcntl", "grp", "pwd", "termios", "resource", "posix", "pty", "tty", "syslog",
                 "crypt", "spwd", "nis", "ossaudiodev", "curses", "readline", "_posixsubprocess",
                 "msvcrt", "winreg", "winsound", "_winapi", "nt"}
# The import name of each distribution the teacher's tools depend on.
IMPORT_NAMES = {"cryptography": "cryptography", "pyjwt": "jwt", "pyrage": "pyrage", "av": "av",
                "requests": "requests", "pynacl": "nacl", "fido2": "fido2"}


def project_files() -> list[Path]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    return files + sorted((ROOT / "bench").glob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, at_import_time: bool = False) -> set[str]:
    """The modules `path` imports. `at_import_time`: only those its module body runs (not inside
    a function, nor under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if at_import_time and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                     ast.Lambda)):
                continue
            if at_import_time and isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit_one(other)
                continue
            visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            # `from formats import ids` imports the module formats.ids
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        visit(node)

    visit(tree)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def top(module: str) -> str:
    return module.split(".")[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle in `graph` as a path that returns to its start, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


FILES = project_files()
MODULES = {module_name(p): p for p in FILES}


def test_the_walk_sees_the_project():
    # A walk that found nothing would pass every rule below.
    assert {"appliance.daemon", "formats.card", "teacher_tools.cli", "hwsim.factory",
            "capture.pipeline", "uploader.spool", "led_indicator.guard",
            "pinpad.service"} <= set(MODULES)
    assert "hwsim.factory" in {m for m in imports(ROOT / "tests" / "inprocess.py")}


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        graph.setdefault(top(module), set()).update(
            top(m) for m in imports(path) if top(m) in PACKAGES and top(m) != top(module))
    assert find_cycle(graph) is None, f"packages import each other: {' -> '.join(find_cycle(graph))}"


def test_no_cycle_between_modules_at_import_time():
    graph = {module: {m for m in imports(path, at_import_time=True) if m in MODULES
                      and m != module}
             for module, path in MODULES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, f"modules import each other at import time: {' -> '.join(cycle)}"


def test_the_pad_service_imports_neither_the_daemon_nor_the_simulator():
    # The pad runs as its own user with the PINs and teachers' keys; the daemon's room and the
    # simulator stay out of it (shared code lives in formats).
    offenders = sorted(f"{module_name(p)} imports {m}" for p in FILES
                       if top(module_name(p)) == "pinpad"
                       for m in imports(p) if top(m) in ("appliance", "hwsim"))
    assert offenders == []
    daemon = sorted(f"{module_name(p)} imports {m}" for p in FILES
                    if top(module_name(p)) in DAEMON for m in imports(p) if top(m) == "pinpad")
    assert daemon == [], "the daemon never holds the pad's code (nor a PIN)"


@pytest.mark.parametrize("package", DAEMON + TEACHER)
def test_the_daemon_and_the_teachers_tools_never_import_the_simulator(package):
    offenders = sorted(f"{module_name(p)} imports {m}" for p in FILES
                       if top(module_name(p)) == package
                       for m in imports(p) if top(m) == "hwsim")
    assert offenders == []


@pytest.mark.parametrize("package", TEACHER)
def test_the_teachers_tools_import_only_what_installs_on_windows_and_macos(package):
    declared = tomllib.loads((ROOT / "dist" / "teacher" / "pyproject.toml").read_text())
    names = {_dist_name(r) for r in declared["project"]["dependencies"]}
    assert names == set(IMPORT_NAMES), "a dependency was added or removed: update IMPORT_NAMES"
    allowed = set(TEACHER) | set(IMPORT_NAMES.values())
    offenders = []
    for path in FILES:
        if top(module_name(path)) != package:
            continue
        for m in imports(path):
            if top(m) in PLATFORM_ONLY:
                offenders.append(f"{module_name(path)} imports {m}, which is not on every system")
            elif top(m) not in sys.stdlib_module_names and top(m) not in allowed \
                    and top(m) != "__future__":
                offenders.append(f"{module_name(path)} imports {m}, which classcam-teacher "
                                 "does not install")
    assert offenders == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    # The walk reads a lazy import and one under TYPE_CHECKING, and finds a cycle.
    sample = tmp_path / "sample.py"
    sample.write_text("from typing import TYPE_CHECKING\nimport fcntl\n"
                      "if TYPE_CHECKING:\n    from hwsim.lab import Lab\n"
                      "def f():\n    from formats import ids\n")
    assert {"fcntl", "hwsim.lab", "formats.ids", "formats"} <= imports(sample)
    assert imports(sample, at_import_time=True) & {"hwsim.lab", "formats.ids"} == set()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _dist_name(requirement: str) -> str:
    name = requirement
    for stop in "[<>=!~; ":
        name = name.split(stop)[0]
    return name.strip().lower()
