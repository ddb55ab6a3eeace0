"""Run one submission's code in a fresh kernel: the process that `sandbox` isolates.

``python metalib/grading/runner.py JOB_DIR`` (a script: it does not import metalib, so torch is
imported once, by the kernel) reads ``JOB_DIR/job.json`` (written by the grader:
the submission's code cells, the questions' in-kernel tests, the probes), executes, and writes
``JOB_DIR/result.json`` and ``JOB_DIR/outputs/*.pt``. It never sees the submission file, the
master notebook or the submissions folder: the grader extracts the code beforehand. Everything it
writes is untrusted (student code runs beside it) and is validated by the grader (`folder`).

Robust to what real submissions contain:

* a cell that raises: execution goes on (the question's tests then report the error);
* an infinite loop: each cell and each question's tests get ``timeout`` seconds, then the kernel
  is interrupted and that question scores what it passed so far;
* a deleted or renamed answer: "`softmax` is not defined: was its cell deleted or renamed?";
* a huge printed output: the kernel's stdout/stderr are capped at 20,000 characters per stream;
* a notebook saved mid-execution: outputs and execution counts are ignored (everything reruns);
* a dead kernel: the questions not graded yet score 0 with that reason.

Two kinds of checks (`metalib.grading.judge`): *probes* call the student's functions on inputs and
save the outputs as plain data (``torch.save``), which the grader loads with ``weights_only=True``
and compares in its own process; *in-kernel tests* (Otter's test cells, for assignments without a
judge) run in the student's kernel and can therefore be tampered with by a dishonest submission.
The kernel talks to this process over IPC sockets in the job folder, not TCP.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["execute", "JOB", "RESULT", "OUTPUTS"]

JOB, RESULT, OUTPUTS = "job.json", "result.json", "outputs"
OUTPUT_CAP = 20_000

PREAMBLE = f'''
import sys as _gr_sys
class _GrCapped:
    def __init__(self, stream, cap):
        self._stream, self._left, self._warned = stream, cap, False
    def write(self, text):
        if self._left > 0:
            self._stream.write(text[:self._left])
        elif not self._warned:
            self._stream.write("\\n[grader: output truncated]\\n")
            self._warned = True
        self._left -= len(text)
        return len(text)
    def __getattr__(self, name):
        return getattr(self._stream, name)
_gr_sys.stdout = _GrCapped(_gr_sys.stdout, {OUTPUT_CAP})
_gr_sys.stderr = _GrCapped(_gr_sys.stderr, {OUTPUT_CAP})
'''

TEST_CELL = '''
def _gr_run(_gr_tests, _gr_functions, _gr_path):
    import builtins as _b, json as _json
    results = []
    def save():
        with open(_gr_path, "w") as f:
            _json.dump(results, f)
    for i, (name, hidden, src) in enumerate(_gr_tests):
        try:
            _b.exec(_b.compile(src, "<test " + name + ">", "exec"), globals())
            results.append([name, hidden, True, ""])
        except KeyboardInterrupt:
            results.append([name, hidden, False, "timed out (interrupted after the time limit)"])
            results.extend([n, h, False, "not run: an earlier test of this question timed out"] for n, h, _ in _gr_tests[i + 1:])
            save()
            return
        except NameError as err:
            missing = getattr(err, "name", None)
            hint = ("`" + str(missing) + "` is not defined: was its cell deleted, renamed or never run?"
                    if missing in _gr_functions else "NameError: " + str(err))
            results.append([name, hidden, False, hint])
        except BaseException as err:
            results.append([name, hidden, False, type(err).__name__ + ": " + str(err)[:500]])
        save()
    save()
_gr_run({tests!r}, {functions!r}, {path!r})
'''

PROBE_CELL = '''
def _gr_probe(_gr_probes, _gr_functions, _gr_dir):
    import builtins as _b, os as _os, torch as _torch
    __import__("metalib.grading.guard", fromlist=["begin_checks"]).begin_checks()  # references raise from now on
    _os.makedirs(_gr_dir, exist_ok=True)
    for i, (pid, code) in enumerate(_gr_probes):
        ns = dict(globals())
        try:
            _b.exec(_b.compile(code, "<check " + pid + ">", "exec"), ns)
            _torch.save(ns["result"], _os.path.join(_gr_dir, pid + ".pt"))
            continue
        except KeyboardInterrupt:
            msg = "timed out (interrupted after the time limit)"
        except NameError as err:
            missing = getattr(err, "name", None)
            msg = ("`" + str(missing) + "` is not defined: was its cell deleted, renamed or never run?"
                   if missing in _gr_functions else "NameError: " + str(err))
        except BaseException as err:
            msg = type(err).__name__ + ": " + str(err)[:500]
        with open(_os.path.join(_gr_dir, pid + ".err"), "w") as f:
            f.write(msg)
        if msg.startswith("timed out"):
            return
_gr_probe({probes!r}, {functions!r}, {path!r})
'''


def _ipc_kernel_manager():
    from jupyter_client import AsyncKernelManager
    from traitlets import default

    class IPCKernelManager(AsyncKernelManager):
        """Kernel sockets are files in the working directory (no TCP ports to collide on).

        Asynchronous like nbclient's default manager: with a blocking one, nbclient's client blocks its
        event loop in ``get_msg`` and a cell's timeout never fires (an infinite loop then ran until the
        whole submission was killed)."""
        @default("transport")
        def _transport_default(self):
            return "ipc"

    return IPCKernelManager


def execute(job: dict, workdir: Path) -> dict:
    """Run ``job`` (see `metalib.grading.folder.make_job`); return the result written to result.json."""
    import nbformat
    from nbclient.exceptions import DeadKernelError

    from metalib.grading.nbexec import SlicedNotebookClient

    cells, timeout = job["cells"], int(job["timeout"])
    run = nbformat.v4.new_notebook()
    run.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    run.cells = [nbformat.v4.new_code_cell(PREAMBLE)] + [nbformat.v4.new_code_cell(s) for s in cells]
    tests_dir = workdir / "tests"
    tests_dir.mkdir(exist_ok=True)
    for q in job["questions"]:
        if q.get("tests"):
            run.cells.append(nbformat.v4.new_code_cell(TEST_CELL.format(
                tests=[tuple(t) for t in q["tests"]], functions=q["functions"], path=str(tests_dir / f"{q['name']}.json"))))
        if q.get("probes"):
            run.cells.append(nbformat.v4.new_code_cell(PROBE_CELL.format(
                probes=[tuple(p) for p in q["probes"]], functions=q["functions"], path=str(workdir / OUTPUTS))))
    status = "graded"
    client = SlicedNotebookClient(run, timeout=timeout, allow_errors=True, interrupt_on_timeout=True,
                            error_on_timeout={"ename": "Timeout", "evalue": f"cell ran over {timeout} s", "traceback": []},
                            kernel_name="python3", kernel_manager_class=_ipc_kernel_manager(),
                            resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except DeadKernelError as err:
        status = f"kernel died ({str(err)[:200]})"
    except Exception as err:  # nbclient itself failed: report, never crash
        status = f"execution failed ({type(err).__name__}: {str(err)[:200]})"
    errors = [e for e in (_cell_error(i, c) for i, c in enumerate(run.cells[1:len(cells) + 1], 1)) if e]
    return {"status": status, "errors": errors}


def _cell_error(index: int, cell) -> str | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return f"code cell {index}: {out.get('ename')}: {str(out.get('evalue'))[:300]}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point: JOB_DIR (holding job.json; result.json, tests/ and outputs/ are written there)."""
    argv = sys.argv[1:] if argv is None else argv
    workdir = Path(argv[0]).resolve()
    job = json.loads((workdir / JOB).read_text())
    outcome = execute(job, workdir)
    (workdir / RESULT).write_text(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
