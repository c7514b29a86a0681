"""The test tree's own rule: shared helpers live in ``tests/support``, and no test module
imports another test module (or a conftest, or a helper beside it), so that moving or
deleting one test file never breaks another."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

TESTS: Final = Path(__file__).resolve().parent
SUPPORT: Final = TESTS / "support"


def imported_test_modules(path: Path) -> list[str]:
    """Every ``tests.…`` module the file imports that is not under ``tests.support``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names = [f"(relative) {node.module or ''}"]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found += [name for name in names
                  if name.startswith(("tests.", "(relative)"))
                  and not name.startswith("tests.support.") and name != "tests.support"]
    return found


def test_tests_import_only_the_support_package() -> None:
    offenders = {str(path.relative_to(TESTS)): modules
                 for path in sorted(TESTS.rglob("*.py"))
                 if (modules := imported_test_modules(path))}
    assert offenders == {}


def test_every_helper_module_is_in_support() -> None:
    """Outside ``tests/support`` a module is a test module, a conftest or a package marker."""
    strays = [str(path.relative_to(TESTS)) for path in sorted(TESTS.rglob("*.py"))
              if SUPPORT not in path.parents
              and not path.name.startswith("test_")
              and path.name not in {"conftest.py", "__init__.py"}]
    assert strays == []


def test_the_rule_catches_an_import_of_a_test_module(tmp_path: Path) -> None:
    module = tmp_path / "test_example.py"
    module.write_text("from tests.gateway.test_admin import seed\n"
                      "import tests.support.gateway\n"
                      "from tests.support.admin import AUTH\n"
                      "from .conftest import thing\n")
    assert imported_test_modules(module) == ["tests.gateway.test_admin", "(relative) conftest"]
