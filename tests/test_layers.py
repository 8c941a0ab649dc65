"""The layers of DESIGN.md hold: a real ``carbonbench run`` never imports torch in the
supervisor's process (its workers do), and the import-linter contracts in pyproject.toml pass."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import fast_suite

REPO = Path(__file__).resolve().parents[1]

# The whole of `carbonbench run` in this process; on exit, whether torch was imported and, if
# it was, the stack of the first import of it: the chain of modules that led there.
RUN_WITHOUT_TORCH = """
import sys
import traceback


class WatchTorch:
    stack = None

    def find_spec(self, name, path=None, target=None):
        if name == "torch" and WatchTorch.stack is None:
            frames = traceback.extract_stack()[:-1]
            WatchTorch.stack = [f"  {f.filename}:{f.lineno}: {f.line}" for f in frames
                                if not f.filename.startswith("<frozen")]
        return None


sys.meta_path.insert(0, WatchTorch())
from carbonbench.cli import main

status = main(sys.argv[1:])
if "torch" in sys.modules:
    print("torch was imported in the supervisor's process:", file=sys.stderr)
    print("\\n".join(WatchTorch.stack or ["  (before the watch)"]), file=sys.stderr)
    sys.exit(99)
sys.exit(status)
"""


def test_a_supervised_run_imports_no_torch(tmp_path) -> None:
    text = fast_suite(archs=("rnn",)).text.replace("idle_baseline_s = 0.1", "idle_baseline_s = 0")
    assert "idle_baseline_s = 0\n" in text
    suite = tmp_path / "one.toml"
    suite.write_text(text)
    argv = ["run", "--suite", str(suite), "--db", str(tmp_path / "r.sqlite"), "--json"]
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_TORCH, *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert '"status": "ok"' in done.stdout


def _package_tree(root: Path) -> Path:
    """carbonbench laid out in one folder, as installed: links to bench/'s entries and to the
    models/ and reports/ folders. grimp reads a package from one folder, and an editable
    install maps carbonbench's subpackages from three."""
    tree = root / "carbonbench"
    tree.mkdir()
    spec = importlib.util.find_spec("carbonbench")
    assert spec is not None and spec.submodule_search_locations
    for entry in Path(spec.submodule_search_locations[0]).iterdir():
        if entry.name != "__pycache__":
            (tree / entry.name).symlink_to(entry)
    for name in ("models", "reports"):
        if not (tree / name).exists():
            sub = importlib.util.find_spec(f"carbonbench.{name}")
            assert sub is not None and sub.submodule_search_locations
            (tree / name).symlink_to(Path(sub.submodule_search_locations[0]))
    return root


def test_import_contracts_hold(tmp_path) -> None:
    pytest.importorskip("importlinter", reason="import-linter (the dev extra) is not installed")
    root = _package_tree(tmp_path)
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(no_cache=True, no_logo=True))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
