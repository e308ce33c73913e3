"""Hostile submissions, graded next to an honest student: the sandbox of `python -m autograder grade`.

Each exploit starts from the released stub (0 points) and adds one code cell at the top that tries
something a hostile student would: write the gradebook, read solutions/, leave a process behind, reach
the network, exhaust processes or memory, flood the output, kill its kernel. Expected for every one:
no more points than the stub, a row with a status, nothing changed outside the sandbox, no process
left behind, and the honest student's full marks intact. One class, graded once (module fixture).
"""
import hashlib
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid

import nbformat
import pytest

from autograder import sandbox, verify
from conftest import REPO, autograder, read_grades
from synthetic_class import fill, solution_bodies, stub, write_submission

ASSIGNMENT = NOTEBOOK = "rlhf_update_rules"
FULL = 15.0
MARK = f"autograder-exploit-{uuid.uuid4().hex[:8]}"      # in every exploit's processes and files

pytestmark = pytest.mark.skipif(sandbox.unavailable_reason() is not None,
                                reason=f"no grading sandbox here: {sandbox.unavailable_reason()}")


def _with_first_cell(code: str):
    nb = stub(ASSIGNMENT, NOTEBOOK)
    nb.cells.insert(0, nbformat.v4.new_code_cell(code))
    return nb


def _exploits(root, victim_db, port) -> dict[str, str]:
    solution = REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    return {
        # every *.db near it (3 levels below each folder above it and in /tmp), and the two it knows the
        # names of: scores to 0, a table dropped
        "db_writer": f"""
import glob, os, sqlite3
hits = []
here = os.path.abspath('.')
near = [here.rsplit('/', k)[0] or '/' for k in range(1, here.count('/') + 1)]   # every folder above
found = [p for d in near for p in glob.glob(d + '/*.db') + glob.glob(d + '/*/*.db') + glob.glob(d + '/*/*/*.db')]
for path in found + glob.glob('/tmp/**/*.db', recursive=True) + [{str(victim_db)!r}, {str(REPO / 'autograder/course/gradebook.db')!r}]:
    try:
        con = sqlite3.connect(path)
        con.execute('UPDATE grade SET auto_score = 0, manual_score = 0')
        con.execute('DROP TABLE IF EXISTS student')
        con.commit()
        hits.append(path)
    except Exception as e:
        pass
print('wrote', hits)
""",
        # read the instructor's solutions and run their answer cells
        "solutions_reader": f"""
import json
nb = json.load(open({str(solution)!r}))
for cell in nb['cells']:
    if cell.get('metadata', {{}}).get('nbgrader', {{}}).get('solution'):
        exec(''.join(cell['source']))
""",
        # a symlink handed in next to the notebook, pointing at solutions/
        "symlink": f"""
import json, os
nb = json.load(open('answers.ipynb'))
for cell in nb['cells']:
    if cell.get('metadata', {{}}).get('nbgrader', {{}}).get('solution'):
        exec(''.join(cell['source']))
""",
        # a process that should outlive grading
        "background": f"""
import subprocess
subprocess.Popen(['sh', '-c', 'exec -a {MARK}-bg sleep 600'], start_new_session=True)
""",
        # the grader's machine, on a port a test server listens on
        "network": f"""
import socket
for host in ('127.0.0.1', '10.0.0.1', '8.8.8.8'):
    try:
        socket.create_connection((host, {port}), timeout=2).sendall(b'{MARK}')
        print('connected to', host)
    except OSError as e:
        print('no connection to', host, e)
""",
        # processes until something stops it (each child sleeps, so they pile up)
        "fork_bomb": """
import os, time
n = 0
try:
    while n < 100000:
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)
        n += 1
except OSError as e:
    print('fork stopped after', n, e)
""",
        # memory until something stops it
        "memory_bomb": """
hog = []
try:
    while True:
        hog.append(bytearray(2**30))
except MemoryError:
    print('stopped at', len(hog), 'GiB')
""",
        # files outside its own folder
        "writer": f"""
import os
for path in [{str(REPO / 'solutions' / (MARK + '.txt'))!r}, {str(root / (MARK + '.txt'))!r},
             os.path.expanduser('~/{MARK}.txt'), '/tmp/{MARK}.txt', '../{MARK}.txt']:
    try:
        open(path, 'w').write('pwned')
        print('wrote', path)
    except OSError as e:
        print('could not write', path, e)
""",
        # a huge output
        "flood": """
import sys
chunk = 'x' * (1 << 20) + '\\n'
for _ in range(1024):
    sys.stdout.write(chunk)
""",
        # the kernel ends itself, three ways
        "os_exit": "import os\nos._exit(0)",
        "kill9": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
        "sys_exit": "import sys\nsys.exit(0)",
        # the kernel stops itself: only the grader's clock can end that
        "sigstop": "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)",
        # another student's notebook, graded just before, by its path in nbgrader's folders
        "copier": f"""
import glob, json
for path in glob.glob({str(root / 'course')!r} + '/*/aaa_honest/*/*.ipynb'):
    nb = json.load(open(path))
    for cell in nb['cells']:
        if cell.get('metadata', {{}}).get('nbgrader', {{}}).get('solution'):
            exec(''.join(cell['source']))
""",
        # ----- code that stays in the kernel and games the test cells themselves (issue 11, item 2). Each
        # drops the stub's own answer cells (an input transformer) so that its fake answers stay defined.
        "input_transformer": _KEEP_FAKES + """
def _skip_tests(lines):
    return ['pass\\n'] if any('assert' in line for line in lines) else lines
get_ipython().input_transformers_post.append(_skip_tests)
""",
        "ast_transformer": _KEEP_FAKES + """
import ast
class _NoAsserts(ast.NodeTransformer):
    def visit_Assert(self, node):
        return ast.Pass()
    def visit_Raise(self, node):
        return ast.Pass()
get_ipython().ast_transformers.append(_NoAsserts())
""",
        "exception_handlers": _KEEP_FAKES + """
import sys
sys.excepthook = lambda *args: None
get_ipython().set_custom_exc((BaseException,), lambda *args, **kwargs: None)
get_ipython().showtraceback = lambda *args, **kwargs: None
get_ipython()._showtraceback = lambda *args, **kwargs: None
_kernel = get_ipython().kernel
_do_execute = _kernel.do_execute
async def _always_ok(*args, **kwargs):
    reply = await _do_execute(*args, **kwargs)
    return {**reply, 'status': 'ok'}
_kernel.do_execute = _always_ok
""",
        "patched_modules": _KEEP_FAKES + _LIARS,
        "lying_objects": _KEEP_FAKES + """
import numpy as np
class _Liar(np.ndarray):
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __float__(self): return 1.0
def rlhf_weight_update(weights, *args, **kwargs):
    return np.asarray(weights, dtype=float).view(_Liar)
def rlhf_policy_gradient(log_probs, *args, **kwargs):
    return {"loss": np.zeros(()).view(_Liar),
            "updated_log_probs": np.asarray(log_probs, dtype=float).view(_Liar),
            "mean_reward": np.zeros(()).view(_Liar), "mean_advantage": np.zeros(()).view(_Liar)}
""" + _LIARS,
        # answers that are arrays of a class of its own: its __array_function__ makes np.allclose say what
        # each assertion wants, and posing as numpy's (its __module__) it is recorded as a plain array, whose
        # shape is right. Only the property cells' assertions, run again outside on the real values, catch it.
        "array_function": _KEEP_FAKES + """
import inspect
import numpy as np
class _Sly(np.ndarray):
    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ in ('allclose', 'isclose', 'array_equal', 'array_equiv'):
            return 'not ' not in ''.join(inspect.stack()[1].code_context or [])
        return super().__array_function__(func, types, args, kwargs)
_Sly.__module__ = 'numpy'
def rlhf_weight_update(weights, *args, **kwargs):
    return np.array(weights, dtype=float).view(_Sly)
""",
        # the solution's records that the outside check compares with: could the kernel read them, it
        # could hand them back as its own
        "trusted_reader": f"""
import glob, os
found = []
for pattern in ({str(root / 'course' / 'trusted')!r} + '/**/*.json', os.path.expanduser('~/.cache/**/*.json'),
                {str(verify.cache_dir())!r} + '/*.json', '/root/.cache/autograder/*.json', '/tmp/**/*.json'):
    for path in glob.glob(pattern, recursive=True):
        try:
            if '"cells"' in open(path).read():       # a plan: {{"names", "modules", "cells"}}
                found.append(path)
        except OSError:
            pass
print('{MARK}: read', len(found), 'trusted files', found)
""",
        "recorder_tamper": _KEEP_FAKES + _LIARS + """
import sys
_rec = sys.modules.get('_autograder_recorder')
if _rec is not None:
    _rec.begin = lambda: None
    _rec.end = lambda: '[]'
""",
    }


# Fake answers, kept in place of the stub's answer cells (which would raise NotImplementedError).
_KEEP_FAKES = """
import numpy as np
def rlhf_weight_update(weights, *args, **kwargs):
    return np.array(weights, dtype=float)
def rlhf_policy_gradient(log_probs, *args, **kwargs):
    return {"loss": 0.0, "updated_log_probs": np.array(log_probs, dtype=float), "mean_reward": 0.0,
            "mean_advantage": 0.0}
def _drop_answer_cells(lines):
    return ['pass\\n'] if any(line.startswith('def rlhf_') for line in lines) else lines
get_ipython().input_transformers_post.append(_drop_answer_cells)
"""

# Comparisons that say "equal" in `assert np.allclose(...)` and "different" in `assert not np.allclose(...)`,
# in numpy, math, torch and the course's helper package.
_LIARS = """
import inspect, math, numpy as np, torch, rlhf_course
def _liar(*args, **kwargs):
    line = ''.join(inspect.stack()[1].code_context or [])
    return 'not ' not in line
np.allclose = np.isclose = np.array_equal = math.isclose = torch.allclose = _liar
np.testing.assert_allclose = np.testing.assert_array_equal = lambda *args, **kwargs: None
rlhf_course.finite_difference_grad = finite_difference_grad = lambda f, x, *args, **kwargs: np.zeros_like(x)
"""


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("attacked")
    subs, db = root / "submissions", root / "course" / "gradebook.db"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    received = []

    def listen():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                received.append(conn.recv(100))
            except OSError:
                pass

    stop = threading.Event()
    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    honest = fill(stub(ASSIGNMENT, NOTEBOOK), solution_bodies(ASSIGNMENT, NOTEBOOK))
    # the victim is graded first (students are graded in sorted order), so the attackers find its scores
    write_submission(subs, "aaa_honest", ASSIGNMENT, NOTEBOOK, honest)
    write_submission(subs, "stub", ASSIGNMENT, NOTEBOOK, stub(ASSIGNMENT, NOTEBOOK))
    for name, code in _exploits(root, db, server.getsockname()[1]).items():
        path = write_submission(subs, name, ASSIGNMENT, NOTEBOOK, _with_first_cell(code))
        if name == "symlink":
            os.symlink(REPO / "solutions" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", path.parent / "answers.ipynb")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest()
              for p in (REPO / "solutions").rglob("*") if p.is_file()}
    proc = autograder("grade", subs, "--out", root / "grades.csv", "--course-dir", root / "course", "--db", db,
                      "--timeout", 10, "--quiet", cwd=root, timeout=1200)
    stop.set()
    thread.join()
    server.close()
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in (REPO / "solutions").rglob("*") if p.is_file()}
    return dict(root=root, rows=read_grades(root / "grades.csv"), proc=proc, db=db, received=received,
                solutions_unchanged=before == after)


EXPLOITS = ["db_writer", "solutions_reader", "symlink", "background", "network", "fork_bomb", "memory_bomb",
            "writer", "flood", "os_exit", "kill9", "sys_exit", "sigstop", "copier",
            "input_transformer", "ast_transformer", "exception_handlers", "patched_modules", "lying_objects",
            "array_function", "recorder_tamper", "trusted_reader"]


def test_the_honest_student_keeps_full_marks(attacked):
    row = attacked["rows"]["aaa_honest"]
    assert (float(row["score"]), row["status"]) == (FULL, "ok"), row


@pytest.mark.parametrize("exploit", EXPLOITS)
def test_an_exploit_earns_no_more_than_the_stub(attacked, exploit):
    rows = attacked["rows"]
    assert float(rows["stub"]["score"]) == 0.0
    row = rows[exploit]
    assert float(row["score"]) <= float(rows["stub"]["score"]), row
    assert row["status"] in ("ok", "warning", "error") and row["message"], row


def test_the_gradebook_keeps_the_honest_score(attacked):
    con = sqlite3.connect(attacked["db"])
    [(score,)] = con.execute("SELECT SUM(COALESCE(g.manual_score, g.auto_score)) FROM grade g "
                             "JOIN submitted_notebook n ON g.notebook_id = n.id "
                             "JOIN submitted_assignment a ON n.assignment_id = a.id "
                             "WHERE a.student_id = 'aaa_honest'").fetchall()
    assert score == FULL
    assert con.execute("SELECT COUNT(*) FROM student").fetchone()[0] == 2 + len(EXPLOITS)


def test_nothing_is_written_outside_the_sandbox(attacked):
    assert attacked["solutions_unchanged"], "solutions/ changed during grading"
    stray = [p for p in (REPO / "solutions", attacked["root"], os.path.expanduser("~"), "/tmp")
             if os.path.exists(os.path.join(p, MARK + ".txt"))]
    assert not stray, f"an exploit wrote {MARK}.txt in {stray}"


def test_no_process_outlives_grading(attacked):
    left = subprocess.run(["pgrep", "-f", MARK], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left behind: {left}"
    sleepers = subprocess.run(["pgrep", "-f", "time.sleep(120)"], capture_output=True, text=True).stdout.split()
    assert not sleepers


def test_no_connection_reaches_the_grader_machine(attacked):
    assert attacked["received"] == []


def test_the_kernel_cannot_read_the_solutions_records(attacked):
    nb = nbformat.read(attacked["root"] / "course" / "autograded" / "trusted_reader" / ASSIGNMENT / f"{NOTEBOOK}.ipynb",
                       as_version=4)
    printed = "".join(o.get("text", "") for o in nb.cells[0].outputs)
    assert f"{MARK}: read 0 trusted files" in printed, printed
    assert list((attacked["root"] / "course" / "trusted").rglob("*.json")), "the grader kept no records"


def test_an_outside_check_failure_is_named_in_the_feedback(attacked):
    html = (attacked["root"] / "feedback" / "recorder_tamper" / ASSIGNMENT / f"{NOTEBOOK}.html").read_text()
    assert "OutsideCheckError" in html and "rlhf_weight_update was called 0 time(s)" in html


def test_a_flood_of_output_is_cut(attacked):
    feedback = attacked["root"] / "feedback" / "flood" / ASSIGNMENT / f"{NOTEBOOK}.html"
    autograded = attacked["root"] / "course" / "autograded" / "flood" / ASSIGNMENT / f"{NOTEBOOK}.ipynb"
    assert autograded.stat().st_size < 20 * 2**20, autograded.stat().st_size
    assert feedback.is_file() and feedback.stat().st_size < 20 * 2**20


def test_grading_refuses_without_a_sandbox_unless_told(tmp_path):
    subs = tmp_path / "subs"
    write_submission(subs, "s", ASSIGNMENT, NOTEBOOK, stub(ASSIGNMENT, NOTEBOOK))
    env = os.environ | {"PATH": str(tmp_path / "nobin")}      # no bwrap, prlimit or timeout on PATH
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", subs, "--out", tmp_path / "g.csv",
                           "--course-dir", tmp_path / "course", "--quiet"], capture_output=True, text=True,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "--no-sandbox" in proc.stderr, proc.stderr
    assert "bubblewrap" in proc.stderr and "\n" not in proc.stderr.strip()
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", subs, "--out", tmp_path / "g.csv",
                           "--course-dir", tmp_path / "course", "--quiet", "--no-sandbox"], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = read_grades(tmp_path / "g.csv")["s"]
    assert float(row["score"]) == 0.0 and row["message"].endswith("graded without a sandbox (--no-sandbox)"), row


def test_answers_that_lie_to_numpy_fail_where_the_replay_runs_the_assertions_again(attacked):
    # In the kernel every assertion of the property cell believed the lying arrays, and their shape is
    # right: the cell fails only because the grader ran its assertions again on the values recorded. (The
    # exploit's rlhf_policy_gradient is the stub's: its input transformer is gone after the first test cell.)
    nb = nbformat.read(attacked["root"] / "course" / "autograded" / "array_function" / ASSIGNMENT / f"{NOTEBOOK}.ipynb",
                       as_version=4)
    cells = {cell.metadata.get("nbgrader", {}).get("grade_id"): cell for cell in nb.cells}
    errors = [o for o in cells["test_rlhf_weight_update_invariants"].outputs if o.get("output_type") == "error"]
    assert [o["ename"] for o in errors] == ["OutsideCheckError"], errors
    assert "run again outside the kernel on the answers it recorded" in errors[0]["evalue"], errors
