"""Where the course keeps what it builds (no heavy imports: the grading sandbox's launcher reads it)."""
import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$RLHF_COURSE_CACHE`` if set, else ``~/.cache/rlhf_course``."""
    return Path(os.environ.get("RLHF_COURSE_CACHE") or Path.home() / ".cache" / "rlhf_course")
