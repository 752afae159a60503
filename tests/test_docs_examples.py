"""Every example in the documentation runs, so the docs cannot drift from the code.

From each ``docs/**/*.md`` page, in page order: every fenced ``python`` block
runs (all blocks of a page in one fresh namespace), and every line of a
``console`` block that starts with ``$ prunekit `` runs as
``python -m prunekit ...`` and must exit 0; both in a fresh temporary folder
per page. Other console lines (pip, mkdocs, benchmark scripts) are shown, not
run; blocks with any other language tag are not code to run. The ``>>>``
examples of public docstrings (which the API reference renders) run as
doctests.
"""

from __future__ import annotations

import doctest
import importlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import prunekit
from prunekit.coupling import handlers as _handlers
from prunekit.data.registry import DATASETS
from prunekit.masks.realisation import REALISATIONS
from prunekit.schedules import SCHEDULES
from prunekit.scores import SCORES
from prunekit.structures import STRUCTURES
from prunekit.zoo.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: an opening fence (``` or ~~~, three or more), its language tag, and the rest of the line
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*$")


def blocks(text: str) -> list[tuple[str, str, int]]:
    """The fenced blocks of a Markdown page: ``(language, code, line of the opening fence)``."""
    found = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        fence, indent = m.group("fence"), len(m.group("indent"))
        start = i
        body = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence))
                                      and set(lines[i].strip()) == {fence[0]}):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        found.append((m.group("lang").lower(), "\n".join(body), start + 1))
        i += 1
    return found


def steps(text: str) -> list[tuple[str, str, int]]:
    """What runs on a page, in order: ``("python", code, line)`` and ``("prunekit", arguments, line)``."""
    out = []
    for lang, code, line in blocks(text):
        if lang in ("python", "py"):
            out.append(("python", code, line))
        elif lang in ("console", "shell-session"):
            for offset, row in enumerate(code.splitlines(), start=1):
                if row.startswith("$ prunekit "):
                    out.append(("prunekit", row[len("$ prunekit "):], line + offset))
    return out


def pages() -> list[Path]:
    """Every page of the site with at least one example to run."""
    return sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts and steps(p.read_text(encoding="utf-8")))


def _registries() -> list[dict]:
    """Every table a page may register into (scores, structures, ..., layer handlers)."""
    tables = []
    for registry in (SCORES, STRUCTURES, SCHEDULES, REALISATIONS, MODELS, DATASETS):
        tables += [registry._entries, registry._aliases]
    return tables + [_handlers._BY_NAME, _handlers._BY_TYPE, _handlers.WEIGHT_OUT_DIMS]


@pytest.fixture
def registries_restored():
    """What a page registers (its own score, structure, layer handler ...) is gone after it."""
    tables = _registries()
    saved = [dict(t) for t in tables]
    entries = {name: (dict(e.factories), dict(e.needs), e.aliases) for name, e in SCORES._entries.items()}
    yield
    for table, copy in zip(tables, saved):
        table.clear()
        table.update(copy)
    for name, (factories, needs, aliases) in entries.items():
        entry = SCORES._entries[name]
        entry.factories, entry.needs, entry.aliases = factories, needs, aliases


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(prunekit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries_restored) -> None:
    todo = steps(page.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    where = page.relative_to(ROOT)
    for kind, code, line in todo:
        if kind == "python":
            try:
                exec(compile(code, f"{where}:{line}", "exec"), namespace)
            except Exception as exc:  # the page and line in the report, the traceback chained
                raise AssertionError(f"{where} line {line}: the python block raised {exc!r}") from exc
        else:
            run = subprocess.run([sys.executable, "-m", "prunekit", *shlex.split(code)], cwd=tmp_path,
                                 env=_env(), capture_output=True, text=True, timeout=300)
            assert run.returncode == 0, (f"{where} line {line}: `prunekit {code}` exited {run.returncode}\n"
                                         f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}")


def test_the_collector_finds_python_and_prunekit_lines_only() -> None:
    page = ("text\n\n```python\nx = 1\n```\n\n```console\n$ pip install prunekit\n$ prunekit list models\n"
            "output line\n```\n\n````text\n```python\nnot run\n```\n````\n\n```yaml\na: 1\n```\n")
    assert steps(page) == [("python", "x = 1", 3), ("prunekit", "list models", 9)]


def _modules_with_examples() -> list[str]:
    """The prunekit modules whose source holds a ``>>>`` example (importing them all would be slow)."""
    package = Path(prunekit.__file__).resolve().parent
    names = []
    for path in sorted(package.rglob("*.py")):
        if ">>>" in path.read_text(encoding="utf-8"):
            parts = path.relative_to(package.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_docstring_examples_run() -> None:
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    examples = 0
    for name in _modules_with_examples():
        module = importlib.import_module(name)
        for test in finder.find(module, name):
            examples += len(test.examples)
            runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} of {examples} docstring examples failed (see the output above)"
