"""The packages import one way: app -> annotation -> data, inference -> modeling; train -> data,
modeling. The annotation document never imports Qt nor the app. Read from the source with ast
(every import, also those inside functions), nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "hcviewer"
SHARED = {p.stem for p in PACKAGE_ROOT.glob("*.py") if p.stem != "__init__"}  # hcviewer/fileio.py...: any package may use them
ALLOWED = {  # package -> the hcviewer packages it may import besides itself and SHARED
    "modeling": set(),
    "inference": {"modeling"},
    "data": {"modeling"},
    "train": {"data", "modeling"},
    "annotation": {"data", "inference", "modeling"},
    "app": {"annotation", "data", "inference", "modeling"},
}
QT = ("PySide6", "shiboken6", "pyqtgraph")  # what the Qt-free packages never import


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The hcviewer modules a source file imports."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> set[str]:
    """The hcviewer modules ``source`` (a module of ``package``) imports when it runs: absolute
    and relative imports at any depth, not those under ``if TYPE_CHECKING:`` (type hints only)."""
    found = set()
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # "from pkg import module"
    return {name for name in found if name == "hcviewer" or name.startswith("hcviewer.")}


def _qt_imports_in(source: str) -> set[str]:
    """The Qt modules ``source`` imports when it runs (as ``_imports_in``)."""
    found = set()
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
    return {name for name in found if name.split(".")[0] in QT}


def _runtime_nodes(node: ast.AST):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (n for orelse in child.orelse for n in [orelse, *_runtime_nodes(orelse)])
            continue
        yield child
        yield from _runtime_nodes(child)


def _source_files() -> list[Path]:
    return sorted(PACKAGE_ROOT.rglob("*.py"))


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in _source_files()}
    graph = {}
    for name, path in modules.items():
        # "from hcviewer.annotation import batch" names a module; "from hcviewer.app.x import Y" names x
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _top_package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_shared_top_level_modules_import_no_package():
    wrong = [f"{name}.py imports {module}" for name in sorted(SHARED)
             for module in sorted(_imports(PACKAGE_ROOT / f"{name}.py")) if _top_package(module) not in SHARED | {""}]
    assert not wrong, "\n".join(wrong)


def test_the_package_list_is_complete():
    packages = {p.name for p in PACKAGE_ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED), "a new package needs its place in ALLOWED"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_layers_below_it(package):
    wrong = []
    for path in sorted((PACKAGE_ROOT / package).rglob("*.py")):
        for module in sorted(_imports(path)):
            target = _top_package(module)
            if target and target not in {package} | SHARED | ALLOWED[package]:
                wrong.append(f"{path.relative_to(PACKAGE_ROOT.parent)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_through_others():
    graph = _import_graph()
    cycles = set()
    for start in graph:
        stack = [(start, (start,))]
        while stack:
            module, path = stack.pop()
            for target in graph[module]:
                if target == start:
                    cycles.add(" -> ".join(path + (start,)))
                elif target not in path and len(path) < 6:
                    stack.append((target, path + (target,)))
    assert not cycles, "\n".join(sorted(cycles))


def test_the_checker_sees_imports_inside_functions_and_relative_ones_but_not_type_hints():
    source = ("from . import worker\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
              "    from hcviewer.app.main_window import MainWindow\n\ndef f():\n    from hcviewer.train import cli\n")
    found = _imports_in(source, "hcviewer.app")
    assert {"hcviewer.app.worker", "hcviewer.train.cli"} <= found
    assert "hcviewer.app.main_window" not in found


@pytest.mark.parametrize("package", sorted(set(ALLOWED) - {"app"}))
def test_only_the_app_imports_qt(package):
    wrong = [f"{path.relative_to(PACKAGE_ROOT.parent)} imports {module}"
             for path in sorted((PACKAGE_ROOT / package).rglob("*.py"))
             for module in sorted(_qt_imports_in(path.read_text(encoding="utf-8")))]
    assert not wrong, "\n".join(wrong)


def test_the_qt_checker_sees_qt_imports_inside_functions():
    found = _qt_imports_in("import numpy\ndef f():\n    from PySide6.QtCore import QObject\n    import pyqtgraph as pg\n")
    assert found == {"PySide6.QtCore", "pyqtgraph"}
