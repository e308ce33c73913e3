"""Where the course's files are, and the nbgrader configuration that describes them."""
import os
import sys
from pathlib import Path

from traitlets.config import Config, PyFileConfigLoader

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
CONFIG_FILE = PACKAGE / "nbgrader_config.py"
COURSE_DIR = PACKAGE / "course"      # nbgrader's working folder and gradebook unless --course-dir says
SOLUTIONS = REPO / "solutions"
EXERCISES = REPO / "exercises"
COURSE_ID = "rlhf-course"


class ConfigNotLoaded(RuntimeError):
    """The nbgrader config is missing or broken (nbgrader itself would log and carry on)."""


def first_line(text: str) -> str:
    """The first line of a (possibly multi-line) error message: the CLI prints errors as one line."""
    return (text.strip().splitlines() or [""])[0]


# ------------------------------------------------------------------ what nbgrader says a cell is
def nbgrader_meta(cell) -> dict:
    """A cell's nbgrader metadata, or {} when it is absent or malformed (``null``, a list, ...): a
    submission can hold anything there."""
    meta = cell.get("metadata")
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def _autograded_test(meta: dict) -> bool:
    # nbgrader grades answer cells too (autograded answers): "grade" alone does not make a test
    return bool(meta.get("grade")) and not meta.get("solution")


def is_test_cell(cell) -> bool:
    """An autograded test cell: graded, not an answer, code."""
    return cell.cell_type == "code" and _autograded_test(nbgrader_meta(cell))


def is_answer_cell(cell) -> bool:
    """A code cell the student writes (nbgrader's solution cell, graded or not)."""
    return cell.cell_type == "code" and bool(nbgrader_meta(cell).get("solution"))


def test_cell_id(cell) -> str | None:
    """The grade_id of an autograded test cell, else None."""
    return nbgrader_meta(cell).get("grade_id") if is_test_cell(cell) else None


def graded_cells(nb) -> dict:
    """grade_id -> cell, for every autograded test cell of a notebook, whatever its cell type now (a
    student may have turned one into markdown)."""
    out = {}
    for cell in nb.cells:
        meta = nbgrader_meta(cell)
        if _autograded_test(meta):
            out[meta.get("grade_id")] = cell
    return out


def _alembic_head_in_process() -> None:
    """Make nbgrader find its gradebook schema version in this process, not in a new one.

    nbgrader stamps every new gradebook with the head revision of its migrations, which it gets by
    running ``alembic heads`` in a fresh interpreter: ≈ 5 s on these machines (the interpreter imports
    nbgrader again), paid by every grading run and every merge. Asking alembic here, where nbgrader is
    already imported, gives the same revision in ≈ 0.2 s. nbgrader's own function is the fallback.
    """
    import functools

    import nbgrader.api

    original = nbgrader.api.get_alembic_version
    if getattr(original, "in_process", False):
        return

    @functools.lru_cache(maxsize=1)
    def head() -> str:
        try:
            from alembic.config import Config as AlembicConfig
            from alembic.script import ScriptDirectory
            from nbgrader.dbutil import _temp_alembic_ini

            with _temp_alembic_ini("sqlite:///gradebook.db") as ini:     # the URL is not opened
                return ScriptDirectory.from_config(AlembicConfig(ini)).get_current_head()
        except Exception:                # another nbgrader or alembic: do what nbgrader does
            return original()

    head.in_process = True
    nbgrader.api.get_alembic_version = head


def load_config(path: Path = CONFIG_FILE) -> Config:
    """Load the nbgrader config file, raising instead of falling back to defaults.

    nbgrader logs a config file that raises and continues with defaults (exit 0): grading would then
    run without the timeout, the minimal tracebacks and the hidden-test filter. We refuse instead.
    """
    # nbgrader shells out to `alembic` (gradebook migrations) by name: make this interpreter's
    # scripts findable even when the virtualenv is not activated.
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    _alembic_head_in_process()
    path = Path(path)
    if not path.is_file():
        raise ConfigNotLoaded(f"nbgrader config {path} does not exist")
    try:
        config = PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
    except Exception as exc:  # any error inside the file: syntax, import, ...
        raise ConfigNotLoaded(f"nbgrader config {path} failed to load: {type(exc).__name__}: "
                              f"{first_line(str(exc))}") from exc
    if config.get("CourseDirectory", {}).get("course_id") != COURSE_ID:
        raise ConfigNotLoaded(f"nbgrader config {path} loaded but does not set CourseDirectory.course_id = {COURSE_ID!r}")
    return config


def assignments(root: Path = SOLUTIONS) -> list[str]:
    """Assignment names: the folders of ``solutions/`` that hold at least one notebook."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith(".")
                  and any(p.glob("*.ipynb")))


def notebooks(assignment: str, root: Path = SOLUTIONS) -> list[str]:
    """Notebook names (without .ipynb) of one assignment."""
    return sorted(p.stem for p in (Path(root) / assignment).glob("*.ipynb"))
