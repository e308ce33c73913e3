"""nbgrader's Execute step with its kernel in the sandbox (``autograder.sandbox``).

Everything here runs in the grader's process: the kernel manager puts each kernel's connection file
and ZeroMQ sockets in a private folder (the only folder of the grader's the sandbox can write besides
the submission's), and the Execute preprocessor always starts the sandbox's kernel spec, whatever
kernel the submitted notebook names.
"""
import ast
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from queue import Empty

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import ensure_async, run_sync
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer, Unicode, default

from autograder import replay, verify
from autograder.course import test_cell_id
from autograder.sandbox import KERNEL_NAME, limits_from_env


class SandboxKernelManager(AsyncKernelManager):
    """A kernel reached over Unix sockets in a folder of its own (no TCP: the sandbox has no network)."""

    @default("transport")
    def _transport_default(self):
        return "ipc"

    @default("connection_file")
    def _connection_file_default(self):
        folder = tempfile.mkdtemp(prefix="kernel-", dir=os.environ.get("JUPYTER_RUNTIME_DIR"))
        return os.path.join(folder, "kernel.json")


MAX_RECORDS_CHARS = 64 * 2**20      # one cell's records as the kernel returns them (a few MB at most)


def _content_bytes(content: dict) -> int:
    """Roughly how many bytes an output message adds to the notebook (its text and data fields)."""
    data = content.get("data") or {}
    return len(content.get("text") or "") + sum(len(v) if isinstance(v, str) else len(str(v)) for v in data.values())


def _error(ename: str, evalue: str):
    return nbformat.v4.new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class VerifiedExecute(Execute):
    """nbgrader's Execute, with each test cell's graded calls checked outside the kernel.

    Before the first cell the recorder (``autograder.recorder``) is loaded into the kernel; around each
    test cell, two silent requests restore the kernel's pristine state and collect the cell's records,
    which ``autograder.verify`` compares with the solution's; in a cell compared by structure
    ``autograder.replay`` then runs the cell's assertions again, here, on the answers recorded. A cell
    that disagrees gets an error output (``OutsideCheckError``): nbgrader then scores it 0. With
    ``record_only`` (the trusted run of the solution notebook) the records are kept in ``self.records``
    instead.
    """

    trusted_dir = Unicode("", help="folder of <assignment>/<notebook>.json plans; empty: no outside check"
                          ).tag(config=True)
    record_only = Bool(False, help="keep each test cell's records (the solution's run)").tag(config=True)
    request_timeout = Integer(60, help="seconds for each of the checker's own requests").tag(config=True)
    plan: dict | None = None      # graded names, modules to restore, each test cell's trusted records

    def preprocess(self, nb, resources=None, km=None):
        self.plan = self._load_plan(resources) if not self.record_only else self.plan
        self.records, self._installed = {}, False
        return super().preprocess(nb, resources, km)

    def _load_plan(self, resources) -> dict | None:
        info = (resources or {}).get("nbgrader") or {}
        if not self.trusted_dir or not info.get("assignment"):
            return None
        path = Path(self.trusted_dir) / info["assignment"] / f"{info['notebook']}.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    async def _async_request(self, code: str, expressions: dict | None = None) -> dict | None:
        """A silent request; its reply's content, or None when the kernel did not answer in time."""
        msg_id = await ensure_async(self.kc.execute(code, silent=True, store_history=False,
                                                    user_expressions=expressions or {}, allow_stdin=False,
                                                    stop_on_error=False))
        deadline = time.monotonic() + self.request_timeout
        while time.monotonic() < deadline:
            try:
                msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=1))
            except Empty:
                if not await ensure_async(self.kc.is_alive()):
                    return None
                continue
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return msg.get("content") or {}
        await ensure_async(self.km.interrupt_kernel())
        return None

    _request = run_sync(_async_request)

    def _records(self) -> list | None:
        """The records of the cell that just ran, read from the reply to the ``end`` request.

        The recorder keeps a cell's records to a few MB; a reply far larger than that was written by
        the submission, not the recorder, and is not parsed (its objects would take ten times its size
        of the grader's memory): the records did not come back.
        """
        reply = self._request("", {"r": verify.END_EXPRESSION})
        value = ((reply or {}).get("user_expressions") or {}).get("r") or {}
        try:
            text = value["data"]["text/plain"]
            if len(text) > MAX_RECORDS_CHARS:
                return None
            return json.loads(ast.literal_eval(text))
        except Exception:   # missing, an error, not a string, not JSON: the records did not come back
            return None

    def preprocess_cell(self, cell, resources, index):
        if self.plan is None or cell.cell_type != "code" or not cell.source.strip():
            return super().preprocess_cell(cell, resources, index)
        if not self._installed:
            self._installed = True
            self._request("", {"install": verify.install_expression(self.plan["names"], self.plan["modules"],
                                                                  self.plan.get("setup", []))})
        grade_id = test_cell_id(cell)
        if grade_id is None:
            return super().preprocess_cell(cell, resources, index)
        self._request("", {"begin": verify.BEGIN_EXPRESSION})
        cell, resources = super().preprocess_cell(cell, resources, index)
        records = self._records()
        if self.record_only:
            self.records[grade_id] = records
            return cell, resources
        why = verify.disagreement(self.plan["cells"].get(grade_id) or [], records,
                                  values=grade_id not in self.plan.get("structure_only", []),
                                  structure_names=self.plan.get("structure_names", []))
        errored = any(o.get("output_type") == "error" for o in cell.outputs)
        source = (self.plan.get("replay") or {}).get(grade_id)
        if not why and source is not None and not errored:
            failed = replay.run(source, self.plan.get("setup", []), self.plan["names"], records)
            why = failed and ("its assertions, run again outside the kernel on the answers it recorded, "
                              f"failed ({failed})")
        if why and not errored:
            cell.outputs.append(_error("OutsideCheckError", f"the grader's own check of this cell failed: {why}"))
        return cell, resources


class SandboxedExecute(VerifiedExecute):
    """nbgrader's Execute, with the kernel always started in the sandbox and its output capped.

    The notebook's wall-clock limit (``Limits.wall_s``) is kept here, outside the kernel: each cell's
    timeout is cut to the time left, and cells reached after it are not run (an error each, so 0
    points). Outputs are kept up to ``max_cell_output_bytes`` per cell and ``max_output_bytes`` per
    notebook; past that, one line says they were cut and the rest is dropped as it arrives, so a
    submission that prints a gigabyte cannot fill the grader's memory, the gradebook or the feedback.
    Error outputs are always kept (trimmed): they are what nbgrader scores a test cell by, and dropping
    one would turn a failed test into a pass.
    """

    max_cell_output_bytes = Integer(2**20, help="output kept per cell, in bytes").tag(config=True)
    max_output_bytes = Integer(8 * 2**20, help="output kept per notebook, in bytes").tag(config=True)
    # A submission that prints a gigabyte is still sending output after its cell has replied. nbgrader raises
    # (and fails the whole notebook) when output stops arriving for 4 s; here the rest is dropped after
    # 10 s and grading goes on. No failure can be lost that way: the reply itself says whether the cell
    # raised, and nbgrader's on_cell_executed adds that error to the cell when its output did not come.
    iopub_timeout = Integer(10).tag(config=True)
    raise_on_iopub_timeout = Bool(False).tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs["kernel_manager_class"] = SandboxKernelManager
        kwargs["kernel_name"] = KERNEL_NAME
        super().__init__(*args, **kwargs)
        self._output_bytes, self._cell_bytes, self._cut = 0, {}, set()

    def preprocess(self, nb, resources=None, km=None):
        self._output_bytes, self._cell_bytes, self._cut = 0, {}, set()
        self._wall_s = limits_from_env().wall_s
        self._deadline = time.monotonic() + self._wall_s
        self._hung = False
        return super().preprocess(nb, resources, km)

    async def _async_handle_timeout(self, timeout, cell=None):
        """A cell ran past its timeout: interrupt it (nbclient), then check the kernel answers again.

        A kernel that does not answer 10 s after the interrupt (it stopped itself, or ignores SIGINT) is
        killed, and the cells after it are not run: each would only wait out its own timeout.
        """
        reply = await super()._async_handle_timeout(timeout, cell)
        try:
            await asyncio.wait_for(self._kernel_answers(), 10)
        except asyncio.TimeoutError:
            self._hung, self._deadline = True, time.monotonic()
            await ensure_async(self.km.shutdown_kernel(now=True))
        return reply

    async def _kernel_answers(self) -> None:
        msg_id = self.kc.kernel_info()
        while True:
            msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=None))
            if msg.get("parent_header", {}).get("msg_id") == msg_id:
                return

    def _get_timeout(self, cell):
        timeout = super()._get_timeout(cell)
        left = max(1, int(self._deadline - time.monotonic()))
        return left if timeout is None else min(timeout, left)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and cell.source.strip() and time.monotonic() >= self._deadline:
            why = ("the kernel stopped answering after a cell timed out, and was ended" if self._hung
                   else f"the notebook had used its {self._wall_s} s")
            cell.outputs = [nbformat.v4.new_output("error", ename="NotebookTimeLimit", evalue=f"not run: {why}",
                                                   traceback=[f"NotebookTimeLimit: this cell was not run; {why}"])]
            return cell, resources
        return super().preprocess_cell(cell, resources, index)

    def output(self, outs, msg, display_id, cell_index):
        content = msg.get("content") or {}
        if msg["msg_type"] == "error":
            content["evalue"] = str(content.get("evalue", ""))[:2000]
            content["traceback"] = [str(line)[:4000] for line in (content.get("traceback") or [])[-30:]]
            return super().output(outs, msg, display_id, cell_index)
        size = _content_bytes(content)                      # counted as kept: a flooding cell does not
        cell = self._cell_bytes.get(cell_index, 0) + size     # cut the outputs of the cells after it
        if cell <= self.max_cell_output_bytes and self._output_bytes + size <= self.max_output_bytes:
            self._cell_bytes[cell_index], self._output_bytes = cell, self._output_bytes + size
            return super().output(outs, msg, display_id, cell_index)
        if cell_index not in self._cut:
            self._cut.add(cell_index)
            limit = (f"this cell printed more than {self.max_cell_output_bytes // 2**20} MB"
                     if cell > self.max_cell_output_bytes
                     else f"the notebook printed more than {self.max_output_bytes // 2**20} MB")
            outs.append(nbformat.v4.new_output("stream", name="stderr",
                                               text=f"[grading: output cut here; {limit}]\n"))
        return None
