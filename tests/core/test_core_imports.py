"""The pure core stays pure: ``agentcron.core`` imports no I/O module and no logging."""

from __future__ import annotations

import ast
from pathlib import Path

import agentcron.core

CORE = Path(agentcron.core.__file__).parent
# Standard-library modules the core may use: computation only (zoneinfo reads the tz database,
# which SPEC §3 names as the source of truth for zones).
ALLOWED_STDLIB = frozenset(
    {
        "__future__",
        "base64",
        "binascii",
        "bisect",
        "calendar",
        "collections",
        "dataclasses",
        "datetime",
        "enum",
        "functools",
        "hashlib",
        "itertools",
        "json",
        "math",
        "re",
        "typing",
        "zoneinfo",
    }
)
# Our modules the core may use: itself, and the exception tree (which imports only the core).
ALLOWED_OWN = ("agentcron.core", "agentcron.errors")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
    return found


def _allowed(module: str) -> bool:
    if module.split(".", maxsplit=1)[0] in ALLOWED_STDLIB:
        return True
    return any(module == own or module.startswith(own + ".") for own in ALLOWED_OWN)


def test_every_core_module_imports_only_pure_modules() -> None:
    """No asyncio/anyio, sockets, files, subprocesses, clocks or structlog in ``core/``."""
    modules = sorted(CORE.glob("*.py"))
    assert len(modules) >= 9
    offenders = {
        path.name: sorted(m for m in imported_modules(path) if not _allowed(m)) for path in modules
    }
    assert {name: bad for name, bad in offenders.items() if bad} == {}


def test_the_error_tree_imports_only_the_core() -> None:
    """``agentcron.errors`` is shared by every layer, so it must not pull I/O into the core."""
    errors = CORE.parent / "errors.py"
    assert {m for m in imported_modules(errors) if not _allowed(m)} == set()


def test_the_check_would_catch_an_io_import(tmp_path: Path) -> None:
    """The checker itself: a module importing ``os`` and structlog is flagged."""
    module = tmp_path / "bad.py"
    module.write_text("import os\nfrom structlog import get_logger\nimport re\n")
    assert sorted(m for m in imported_modules(module) if not _allowed(m)) == ["os", "structlog"]
