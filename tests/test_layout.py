"""The package's layout rules, checked on every run: the import-linter contracts of
pyproject.toml (a lower layer never imports a higher one), small modules, and
internal imports at module level (a function-level import may only load an
optional dependency, never dodge a cycle)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "prunekit"
MAX_LINES = 600
#: Function-level internal imports still allowed (each listed, so a new one fails the test).
DEFERRED_ALLOWED: set[str] = set()


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("import-linter is part of the test extra: pip install -e '.[test]'")
    run = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": str(Path(sys.executable).parent)})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_no_module_over_the_size_limit() -> None:
    big = {str(p.relative_to(PACKAGE)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines: {big}"


def _deferred_internal_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                internal = (isinstance(sub, ast.ImportFrom) and (sub.level > 0 or (sub.module or "").startswith("prunekit"))) \
                    or (isinstance(sub, ast.Import) and any(a.name.startswith("prunekit") for a in sub.names))
                if internal:
                    found.append(f"{path.relative_to(PACKAGE)}:{sub.lineno}")
    return found


def test_internal_imports_are_at_module_level() -> None:
    deferred = [hit for p in _modules() for hit in _deferred_internal_imports(p)]
    unexpected = sorted(h for h in deferred if h.split(":")[0] not in DEFERRED_ALLOWED)
    assert not unexpected, f"function-level internal imports: {unexpected}"
