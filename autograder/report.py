"""`python -m autograder report grades.csv`: what the class got right and wrong, and LMS grade imports.

Reads the CSV that `grade` wrote and the per-submission results it saved (``<course dir>/results/``:
each test cell's score and, for a failed one, the first line of its error). Writes into ``--out-dir``:

- ``report.md``: per assignment, the score distribution, each test cell's pass rate (a cell passes when
  it earns all its points) and the most common failure messages of each cell, most frequent first, so
  the instructor sees which mistake the class made;
- ``<assignment>_scores.png``: a histogram of the scores;
- with ``--format canvas`` or ``--format moodle``: ``grades_<format>.csv`` in that LMS's import layout
  (see ``LMS_FORMATS``).
"""
import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path

from autograder.course import COURSE_DIR


class ReportError(RuntimeError):
    """The report cannot be made (unreadable CSV, no results); one line for the user."""


def read_rows(grades_csv: Path) -> list[dict]:
    try:
        with open(grades_csv, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ReportError(f"cannot read {grades_csv}: {exc.strerror or exc}") from None
    needed = {"student_id", "assignment", "score", "max_score", "status"}
    if not rows or not needed <= set(rows[0]):
        raise ReportError(f"{grades_csv} is not a grades CSV written by `python -m autograder grade` "
                          f"(needs the columns {', '.join(sorted(needed))})")
    return rows


def read_cells(course_dir: Path, rows: list[dict]) -> tuple[dict[tuple[str, str], list[dict]], list[str]]:
    """(student, assignment) -> its test cells as `grade` saved them ([] when it saved none), and the
    "student/assignment" of each saved result that is not this CSV's row (another run's: a different score
    or status, as when --course-dir names another run's folder), whose cells are left out."""
    import json

    out, foreign = {}, []
    for r in rows:
        key = r["student_id"], r["assignment"]
        path = course_dir / "results" / r["student_id"] / f"{r['assignment']}.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            row = saved.get("row") or {}
            cells = saved.get("cells") or []
        except (OSError, ValueError, AttributeError):
            out[key] = []
            continue
        if cells and (str(row.get("score")) != r["score"] or row.get("status") != r["status"]):
            foreign.append(f"{r['student_id']}/{r['assignment']}")
            cells = []
        out[key] = cells
    return out, foreign


def cell_statistics(rows: list[dict], cells: dict) -> dict[str, dict[str, dict]]:
    """assignment -> grade_id -> {graded, passed, points, messages: Counter} over the graded submissions."""
    stats: dict[str, dict[str, dict]] = defaultdict(dict)
    for r in rows:
        for c in cells[r["student_id"], r["assignment"]]:
            s = stats[r["assignment"]].setdefault(c["cell"], {"graded": 0, "passed": 0, "points": c["max_score"],
                                                                "messages": Counter()})
            s["graded"] += 1
            if c["score"] >= c["max_score"]:
                s["passed"] += 1
            elif c.get("message"):
                s["messages"][c["message"]] += 1
    return stats


def histogram(scores: list[float], max_score: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=150)
    bins = [x - 0.5 for x in range(int(max_score) + 2)] if max_score <= 40 else 20
    ax.hist(scores, bins=bins, color="#0072B2", edgecolor="white")
    ax.set_xlabel(f"score (out of {max_score:g})")
    ax.set_ylabel("submissions")
    ax.set_title(title)
    ax.set_xlim(-0.5, max_score + 0.5)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


LMS_FORMATS = {
    # Canvas's Gradebook import (Grades > Import): a student column Canvas matches on (here SIS User ID,
    # which must equal student_id), the Student, ID, SIS Login ID and Section columns it expects (left empty),
    # one column per assignment named like the Canvas assignment, and the optional "Points Possible" row.
    "canvas": ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"],
    # Moodle's CSV grade import (Grades > Import > CSV file): one identifier column, then one column per grade
    # item; in the import's "Identify user" step map "ID number" to "useridnumber" and each assignment column
    # to its grade item.
    "moodle": ["ID number"],
}


def lms_csv(rows: list[dict], fmt: str, path: Path) -> None:
    """One row per student, one column per assignment (score), in `fmt`'s import layout. A submission
    that is missing is left blank, not 0: importing a 0 would overwrite a grade entered in the LMS by hand
    (a late submission, an extension, a notebook handed in under the wrong folder name)."""
    assignments = sorted({r["assignment"] for r in rows})
    students = sorted({r["student_id"] for r in rows})
    score = {(r["student_id"], r["assignment"]): "" if r["status"] == "missing" else r["score"] for r in rows}
    max_score = {r["assignment"]: r["max_score"] for r in rows}
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(LMS_FORMATS[fmt] + assignments)
        if fmt == "canvas":
            w.writerow(["    Points Possible", "", "", "", ""] + [max_score[a] for a in assignments])
        for s in students:
            ids = ["", "", s, "", ""] if fmt == "canvas" else [s]
            w.writerow(ids + [score.get((s, a), "") for a in assignments])


def report(grades_csv: Path, out_dir: Path | None = None, course_dir: Path | None = None,
           fmt: str | None = None, top: int = 3) -> Path:
    """Write report.md, one histogram per assignment and (with fmt) the LMS CSV; return report.md's path."""
    grades_csv = Path(grades_csv)
    rows = read_rows(grades_csv)
    if fmt is not None and fmt not in LMS_FORMATS:
        raise ReportError(f"unknown --format {fmt}; choose one of {', '.join(LMS_FORMATS)}")
    course_dir = Path(course_dir or COURSE_DIR)
    out_dir = Path(out_dir or grades_csv.parent / "report")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {out_dir}: {exc.strerror or exc}") from None
    cells, foreign = read_cells(course_dir, rows)
    stats = cell_statistics(rows, cells)
    lines = [f"# Grading report: {grades_csv.name}", ""]
    if foreign:
        warning = (f"{len(foreign)} saved result(s) in {course_dir / 'results'} are not this CSV's rows (another "
                   f"run's, or another --course-dir's): {', '.join(foreign[:5])}{' …' if len(foreign) > 5 else ''}; "
                   "their cells are left out of the tables")
        print(f"warning: {warning}", file=sys.stderr)
        lines += [f"**Warning:** {warning}.", ""]
    for assignment in sorted({r["assignment"] for r in rows}):
        mine = [r for r in rows if r["assignment"] == assignment]
        graded = [r for r in mine if r["status"] in ("ok", "warning")]
        max_score = float(mine[0]["max_score"])
        scores = sorted(float(r["score"]) for r in graded)
        lines += [f"## {assignment}", ""]
        counts = Counter(r["status"] for r in mine)
        lines.append(f"{len(mine)} students: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ".")
        if scores:
            mean = sum(scores) / len(scores)
            median = scores[len(scores) // 2] if len(scores) % 2 else (scores[len(scores) // 2 - 1]
                                                                      + scores[len(scores) // 2]) / 2
            lines.append(f"Scores of the graded ones (out of {max_score:g}): mean {mean:.1f}, median {median:g}, "
                         f"{sum(s >= max_score for s in scores)} full marks, {sum(s == 0 for s in scores)} zero.")
            png = out_dir / f"{assignment}_scores.png"
            histogram(scores, max_score, f"{assignment}: {len(scores)} graded submissions", png)
            lines += ["", f"![score histogram]({png.name})"]
        if not stats.get(assignment):
            lines += ["", f"No per-cell results in {course_dir / 'results'} (graded with another --course-dir?)."]
        else:
            lines += ["", "| test cell | points | passed | pass rate | most common failures |", "|---|---:|---:|---:|---|"]
            for cell, s in sorted(stats[assignment].items(), key=lambda kv: kv[1]["passed"] / kv[1]["graded"]):
                failures = "<br>".join(f"{n} × `{m.replace('|', '/').replace('`', '')}`"
                                       for m, n in s["messages"].most_common(top))
                lines.append(f"| `{cell}` | {s['points']:g} | {s['passed']}/{s['graded']} | "
                             f"{s['passed'] / s['graded']:.0%} | {failures} |")
        lines.append("")
    if fmt is not None:
        lms_csv(rows, fmt, out_dir / f"grades_{fmt}.csv")
        lines.append(f"LMS import file: `grades_{fmt}.csv` ({fmt} layout: {', '.join(LMS_FORMATS[fmt])}, "
                     "then one column per assignment).")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def main(args) -> int:
    try:
        path = report(args.grades, out_dir=args.out_dir, course_dir=args.course_dir, fmt=args.format)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
