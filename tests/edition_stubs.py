"""Run every exercise of a student edition as released (the stubs) and save the executed notebooks.

    python tests/edition_stubs.py EDITION OUT_DIR

The background job conftest starts for tests/test_edition.py, which judges the notebooks it saves: each runs
in its own kernel, in its own folder, importing the edition's rlhf_course (PYTHONPATH) rather than the
instructor's installed copy, with errors allowed (a stub's test cells fail by design).
"""
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(edition: Path, out: Path) -> int:
    # One torch thread per kernel: this job shares the machine with the rest of the suite.
    env = {**os.environ, "PYTHONPATH": str(edition), "OMP_NUM_THREADS": "1"}
    for path in sorted(edition.glob("exercises/*/*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(path.parent)}}).execute(env=env)
        nbformat.write(nb, out / path.name)
        print(f"ran {path.relative_to(edition)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
