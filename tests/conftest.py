import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"


def run(*args, cwd=None, timeout=900, check=True):
    """Run a command, returning CompletedProcess; on failure show its output in the assertion."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}\n" \
                                     f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    return proc


def autograder(*args, **kwargs):
    return run(sys.executable, "-m", "autograder", *args, **kwargs)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def course_copy(tmp_path) -> Path:
    """A scratch copy of solutions/ and exercises/ that a test may break on purpose."""
    for name in ("solutions", "exercises"):
        shutil.copytree(REPO / name, tmp_path / name)
    return tmp_path
