"""Run Lightning's own test file for ``ModelPruning`` against prunekit's ``PrunekitPruning``.

Given the path of Lightning's ``tests/tests_pytorch/callbacks/test_pruning.py``
(from a checkout of the Lightning repository at the installed version; this
script downloads nothing), it writes a copy into a temporary directory with one
change, the import line: ``ModelPruning`` comes from
``prunekit.integrations.lightning`` (``PrunekitPruning as ModelPruning``);
nothing else in the file is touched. Next to it go the two small things the file
needs from Lightning's test tree, written here rather than copied: a
``tests_pytorch.helpers.runif.RunIf`` marker (built on
``lightning.pytorch.utilities.testing._runif_reasons``) and a ``caplog``
fixture that lets records of the non-propagating ``lightning.pytorch`` loggers
reach pytest. Then pytest runs the copy and the script prints the counts and
every test that did not pass.

    python benchmarks/lightning_suite.py /path/to/lightning/tests/tests_pytorch/callbacks/test_pruning.py
    python benchmarks/lightning_suite.py PATH -k "lottery" -- -x     # extra pytest arguments after --
    python benchmarks/lightning_suite.py PATH --keep /tmp/ltest      # keep the copy there

The prunekit imported is the one on ``sys.path`` of this interpreter; run it
with ``PYTHONPATH=src`` from a working tree to test that tree. Exit status 0
when no test failed or errored, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

IMPORT_LINE = "from lightning.pytorch.callbacks import ModelCheckpoint, ModelPruning"
SUBSTITUTE = (
    "from lightning.pytorch.callbacks import ModelCheckpoint\n"
    "from prunekit.integrations.lightning import PrunekitPruning as ModelPruning"
)

RUNIF = '''\
import pytest
from lightning.pytorch.utilities.testing import _runif_reasons


def RunIf(**kwargs):
    reasons, marker_kwargs = _runif_reasons(**kwargs)
    return pytest.mark.skipif(len(reasons) > 0, reason="Requires: " + " + ".join(reasons), **marker_kwargs)
'''

CONFTEST = '''\
import logging

import pytest


@pytest.fixture
def caplog(caplog):
    # lightning.pytorch's loggers do not propagate; let caplog see their records during a test
    names = [n for n in logging.root.manager.loggerDict if n.startswith("lightning.pytorch")]
    saved = {n: logging.getLogger(n).propagate for n in names}
    for n in names:
        logging.getLogger(n).propagate = True
    yield caplog
    for n, value in saved.items():
        logging.getLogger(n).propagate = value
'''


def substituted(source: str) -> str:
    """The test file with ``ModelPruning`` imported from prunekit; an error if the import line moved."""
    if source.count(IMPORT_LINE) != 1:
        raise SystemExit(f"error: the line {IMPORT_LINE!r} is not in the file exactly once; "
                         "is it Lightning's tests/tests_pytorch/callbacks/test_pruning.py?")
    return source.replace(IMPORT_LINE, SUBSTITUTE)


def write_tree(test_file: Path, root: Path) -> Path:
    """``root/tests_pytorch/...`` with the substituted copy; returns the copy's path."""
    pkg = root / "tests_pytorch"
    (pkg / "helpers").mkdir(parents=True, exist_ok=True)
    (pkg / "callbacks").mkdir(parents=True, exist_ok=True)
    for init in (pkg / "__init__.py", pkg / "helpers" / "__init__.py", pkg / "callbacks" / "__init__.py"):
        init.write_text("")
    (pkg / "helpers" / "runif.py").write_text(RUNIF)
    (pkg / "conftest.py").write_text(CONFTEST)
    copy = pkg / "callbacks" / "test_pruning.py"
    copy.write_text(substituted(test_file.read_text()))
    return copy


def run(copy: Path, root: Path, extra: list[str]) -> tuple[int, str]:
    env = dict(os.environ)
    # pytest runs in the temporary directory: relative entries (PYTHONPATH=src) are made absolute
    paths = [str(root)] + [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "--rootdir", str(root),
           str(copy), *extra]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def summary(output: str) -> dict[str, int]:
    counts = {}
    last = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error|skipped)", line)]
    if last:
        for number, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)", last[-1]):
            counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("test_file", type=Path, help="Lightning's tests/tests_pytorch/callbacks/test_pruning.py")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("--keep", type=Path, help="write the copy into this directory and keep it")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    if not args.test_file.is_file():
        parser.error(f"{args.test_file} is not a file")
    extra = list(args.pytest_args) + (["-k", args.keyword] if args.keyword else [])
    with tempfile.TemporaryDirectory(prefix="lightning_suite_") as tmp:
        root = args.keep.resolve() if args.keep else Path(tmp)
        copy = write_tree(args.test_file.resolve(), root)
        code, output = run(copy, root, extra)
    tail = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    for line in tail:
        print(line)
    counts = summary(output)
    if not counts:
        print(output[-4000:])
        return 1
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
