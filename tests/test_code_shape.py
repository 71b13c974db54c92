"""The package stays readable: no module over 500 lines and no class with more than 30 methods
(issue 20's limits; a module or class that grows past them is split by what it does)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "hcviewer"
MAX_MODULE_LINES = 500
MAX_CLASS_METHODS = 30


def _sources() -> list[Path]:
    return sorted(PACKAGE_ROOT.rglob("*.py"))


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(PACKAGE_ROOT)): n for p in _sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_no_class_has_more_than_30_methods():
    large = {}
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                methods = sum(isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef)) for c in node.body)
                if methods > MAX_CLASS_METHODS:
                    large[f"{path.relative_to(PACKAGE_ROOT)}:{node.name}"] = methods
    assert large == {}
