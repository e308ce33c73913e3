"""The sandbox a graded notebook's kernel runs in: bubblewrap namespaces plus rlimits.

nbgrader stays in the grader's process: it reads the gradebook, sends the cells and writes the scores.
Only the *kernel*, the process that runs the student's code, is sandboxed. nbgrader starts it from the
kernel spec ``rlhf-sandbox`` (written by ``install_kernelspec``), whose command is this module:
``python -m autograder.sandbox kernel CONNECTION_FILE``. That command runs outside the sandbox, knows
the notebook's folder (its working directory, set by nbclient) and the connection file, and replaces
itself with

    prlimit --cpu --as --nproc --fsize --nofile --core   (resource limits, inherited by every child)
      bwrap ...                                          (namespaces: its own file system, no network,
        python -m ipykernel_launcher -f CONNECTION_FILE     its own process tree)

Inside bubblewrap the kernel sees: the system's programs and libraries and the Python it runs on, the
course's helper package and model cache, all read-only; the submission's own folder (read-write, a
throw-away copy that nbgrader made); a private /tmp and $HOME; and the one folder holding its
connection file, where it creates its ZeroMQ sockets. The grader talks to it over those Unix sockets
(``KernelManager.transport = "ipc"``), which work across network namespaces, so the kernel needs no
network at all. It never sees ``solutions/``, the gradebook, the submissions folder, other students'
files or the rest of the machine. When the kernel's process ends (it finishes, crashes, is killed at
the time limit, or the grader dies: ``--die-with-parent``), bubblewrap's process namespace ends with
it: every process the student's code started is killed. The wall-clock limit of a notebook is kept
from outside, by the grader (``autograder.kernel.SandboxedExecute``), where the student's code cannot
reach the timer.

Why bubblewrap: it is a small, audited setuid-free tool (Flatpak's sandbox), packaged by Debian and
Ubuntu (``apt-get install bubblewrap``), needs no daemon and no root (unprivileged user namespaces, on
by default on current distributions), and each sandbox costs milliseconds. A container runtime would
isolate as well but needs a daemon, images and usually root; ``unshare`` alone would need us to
rebuild what bubblewrap does with mounts.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

KERNEL_NAME = "rlhf-sandbox"
LIMITS_ENV = "AUTOGRADER_SANDBOX_LIMITS"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one notebook's kernel (and everything it starts)."""
    wall_s: int = 900
    """wall clock for the whole notebook (kept by the grader); cells past it are not run and score 0"""
    cpu_s: int = 900
    """CPU seconds of each process (RLIMIT_CPU)"""
    memory_bytes: int = 6 * 2**30
    """address space of each process (RLIMIT_AS): torch and numpy reserve more than they touch"""
    processes: int = 256
    """processes and threads of the sandbox's user (RLIMIT_NPROC, counted in its own user namespace)"""
    file_bytes: int = 256 * 2**20
    """largest file it may write (RLIMIT_FSIZE)"""
    open_files: int = 1024
    """open file descriptors per process (RLIMIT_NOFILE)"""
    threads: int = 1
    """OMP/MKL threads, so that parallel grading jobs do not oversubscribe the cores"""


PIDS_CGROUP_V1 = Path("/sys/fs/cgroup/pids")
CGROUP_PREFIX = "autograder-sandbox-"


def _pids_cgroup_root() -> Path | None:
    """A writable cgroup-v1 pids hierarchy, or None."""
    root = PIDS_CGROUP_V1
    return root if (root / "cgroup.procs").exists() and os.access(root, os.W_OK) else None


def _join_pids_cgroup(limit: int) -> None:
    """Put this process (and so everything it starts) in a new pids cgroup of at most `limit` tasks.

    Needed only when grading runs as root: the kernel ignores RLIMIT_NPROC for root's processes (even in
    a user namespace, since the sandbox's user maps to root outside), so a fork bomb would not stop.
    """
    group = _pids_cgroup_root() / f"{CGROUP_PREFIX}{os.getpid()}"
    group.mkdir(exist_ok=True)
    (group / "pids.max").write_text(str(limit))
    (group / "cgroup.procs").write_text(str(os.getpid()))


def remove_empty_cgroups() -> None:
    """Remove the pids cgroups of sandboxes that have ended (rmdir fails while a process is inside)."""
    root = _pids_cgroup_root()
    for group in root.glob(CGROUP_PREFIX + "*") if root else []:
        try:
            group.rmdir()
        except OSError:
            pass


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def unavailable_reason() -> str | None:
    """None when a sandbox can be set up here; else one line saying why not."""
    if not sys.platform.startswith("linux"):
        return f"the grading sandbox needs Linux (this is {sys.platform})"
    if bwrap_path() is None:
        return "the grading sandbox needs bubblewrap: apt-get install bubblewrap (or your distribution's package)"
    if shutil.which("prlimit") is None:
        return "the grading sandbox needs prlimit (util-linux)"
    if os.geteuid() == 0 and _pids_cgroup_root() is None:
        return ("grading runs as root, for whom the kernel does not enforce the sandbox's process limit, and no "
                f"pids cgroup is writable ({PIDS_CGROUP_V1}): grade as an ordinary user")
    proc = subprocess.run([*sandbox_command(Path(tempfile.gettempdir()), None, Limits()), "true"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return f"bubblewrap cannot create a sandbox here ({why}); are unprivileged user namespaces disabled?"
    return None


def read_only_roots() -> list[Path]:
    """What the kernel may read: the Python it runs on, its packages, the course's helper package and cache."""
    import rlhf_course
    from rlhf_course.paths import default_cache_dir

    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
             Path(rlhf_course.__file__).resolve().parent, default_cache_dir().resolve()}
    return sorted(r for r in roots if r.exists())


def sandbox_command(workdir: Path, ipc_dir: Path | None, limits: Limits) -> list[str]:
    """The argv prefix that runs a command in the sandbox with ``workdir`` (read-write) as its cwd."""
    cmd = ["prlimit", f"--cpu={limits.cpu_s}", f"--as={limits.memory_bytes}", f"--nproc={limits.processes}",
           f"--fsize={limits.file_bytes}", f"--nofile={limits.open_files}", "--core=0",
           bwrap_path() or "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--uid", "1000", "--gid", "1000", "--hostname", "sandbox",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dir", "/tmp/home"]
    for top in ("usr", "bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = Path("/") / top
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "nsswitch.conf"):
        if (Path("/etc") / name).exists():
            cmd += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for root in read_only_roots():
        cmd += ["--ro-bind", str(root), str(root)]
    if ipc_dir is not None:
        cmd += ["--bind", str(ipc_dir), str(ipc_dir)]
    workdir = workdir.resolve()
    cmd += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir), "--clearenv"]
    env = {"HOME": "/tmp/home", "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8", "MPLBACKEND": "Agg", "MPLCONFIGDIR": "/tmp/home/.matplotlib",
           "OMP_NUM_THREADS": str(limits.threads), "MKL_NUM_THREADS": str(limits.threads),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONDONTWRITEBYTECODE": "1", "TQDM_DISABLE": "1"}
    from rlhf_course.paths import default_cache_dir

    env["RLHF_COURSE_CACHE"] = str(default_cache_dir().resolve())
    if os.environ.get("NBGRADER_EXECUTION"):    # notebooks skip their plots and full runs while graded
        env["NBGRADER_EXECUTION"] = os.environ["NBGRADER_EXECUTION"]
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    return cmd


def kernel_command(connection_file: Path, cwd: Path, limits: Limits, extra: list[str] = ()) -> list[str]:
    """The whole command that starts a sandboxed IPython kernel for nbclient (``extra``: nbclient's
    extra kernel arguments, such as nbgrader's ``--HistoryManager.hist_file=:memory:``)."""
    connection_file = Path(connection_file).resolve()
    options = [a for a in extra if a.startswith("--") and "=" in a]       # IPython settings only
    return [*sandbox_command(cwd, connection_file.parent, limits), sys.executable, "-m", "ipykernel_launcher",
            "-f", str(connection_file), *options]


def install_kernelspec(jupyter_path: Path) -> Path:
    """Write the ``rlhf-sandbox`` kernel spec under ``jupyter_path/kernels`` (put it first on JUPYTER_PATH)."""
    spec_dir = Path(jupyter_path) / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "autograder.sandbox", "kernel", "{connection_file}"],
            "display_name": "Python 3 (grading sandbox)", "language": "python",
            # a signal to the launcher's process group would stop at bubblewrap (the kernel runs in a
            # session of its own): ask the kernel to interrupt itself over its control socket instead
            "interrupt_mode": "message",
            "metadata": {"debugger": False}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


def limits_from_env() -> Limits:
    raw = os.environ.get(LIMITS_ENV)
    return Limits(**json.loads(raw)) if raw else Limits()


def limits_env(limits: Limits) -> dict[str, str]:
    return {LIMITS_ENV: json.dumps(asdict(limits))}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "kernel":
        print("usage: python -m autograder.sandbox kernel CONNECTION_FILE [--Setting=value ...]", file=sys.stderr)
        return 2
    limits = limits_from_env()
    if os.geteuid() == 0:
        _join_pids_cgroup(limits.processes)
    cmd = kernel_command(Path(argv[1]), Path.cwd(), limits, argv[2:])
    # The kernel's own stdout/stderr (IPython's banner, crashes) go to a log beside its connection file,
    # not into the grader's terminal; what a cell prints reaches nbgrader through the kernel's sockets.
    log = os.open(Path(argv[1]).parent / "kernel.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.execvp(cmd[0], cmd)     # replaces this process (prlimit then execs bwrap): nbclient's kill reaches bwrap


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
