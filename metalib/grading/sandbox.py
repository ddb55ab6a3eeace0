"""A sandbox per submission: bubblewrap (``bwrap``) around the process that runs a student's code.

What the student's code sees (`command`):

* read-only: the system (/usr, /etc), Python and its packages, the ``metalib`` package (alone: not
  the project folder around it, so not solutions/ with the master notebooks and hidden tests), and
  the data folders (``METALIB_DATA``, ``METALIB_CACHE``), read-only;
* read-write: its own empty job folder (the working directory) and a private /tmp;
* nothing else: not the submissions folder, not the output folder, not other users' files;
* no network (``--unshare-net``: only a loopback of its own), its own PID namespace (it cannot
  see or signal the grader or other submissions; when the sandbox ends, every process in it ends),
  and limits (`Limits`) on address space, CPU time, file size, open files and processes, set by
  `enter` inside the sandbox before any student code runs.

When the grader runs as root, the code inside runs as an unprivileged user id of its own per
parallel slot (``60000 + slot``; the job folder is given to it), so the process limit counts only
that sandbox's processes. Slots are claimed machine-wide (`claim_slots`), so two grading runs at once
never share a user id: one run's fork bomb cannot use up another run's processes. An unprivileged grader relies on the user namespace bwrap creates (the
count is per namespace on Linux >= 5.14).

Where bwrap is missing (macOS, Windows, a Linux without user namespaces), `check_available`
raises `SandboxUnavailable` saying so; ``python -m metalib grade --no-sandbox`` then grades
without isolation, and the report says that the grading was not isolated.
See docs/GRADING.md for what this guarantees and what it does not.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Limits", "SandboxUnavailable", "check_available", "claim_slots", "command", "enter", "readable_roots",
           "SANDBOX_UID_BASE", "JOB_MOUNT", "LIB_MOUNT"]

SANDBOX_UID_BASE = 60000
JOB_MOUNT = "/grading"          # the job folder, inside the sandbox
LIB_MOUNT = "/opt/metalib-grading"  # the grader's copy of metalib, inside the sandbox
BWRAP = "bwrap"
MAX_SLOTS = 4096                # slots (user ids) the grading runs of one machine can hold at once


class SandboxUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Limits:
    """Per-sandbox resource limits (POSIX rlimits, set inside the sandbox)."""
    memory_bytes: int = 8 * 2**30      # address space of each process (RLIMIT_AS)
    cpu_seconds: int = 1800            # CPU time of each process (RLIMIT_CPU)
    file_bytes: int = 256 * 2**20      # largest file written (RLIMIT_FSIZE)
    processes: int = 256               # processes and threads of the sandbox's user (RLIMIT_NPROC)
    open_files: int = 1024             # RLIMIT_NOFILE


def check_available() -> str:
    """The bwrap executable's path, after a trial run; raises `SandboxUnavailable` saying why not."""
    path = shutil.which(BWRAP)
    if path is None:
        raise SandboxUnavailable(
            "bubblewrap (bwrap) is not installed, so submissions cannot be sandboxed. On Debian/Ubuntu: "
            "`sudo apt-get install bubblewrap`. Elsewhere (macOS, Windows) grade with --no-sandbox: the "
            "submissions then run NOT isolated (they can read the masters and each other, and tamper with "
            "the grading); see docs/GRADING.md.")
    trial = [path, "--ro-bind", "/", "/", *_namespaces(), "--dev", "/dev", "--proc", "/proc", "true"]
    proc = subprocess.run(trial, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise SandboxUnavailable(
            f"bwrap is installed but cannot create a sandbox here ({proc.stderr.strip()[:300]}): user "
            "namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1). Grade with --no-sandbox "
            "only if you accept that submissions then run NOT isolated; see docs/GRADING.md.")
    return path


def claim_slots(n: int, folder: Path | None = None) -> tuple[list[int], list]:
    """``n`` sandbox slots that no other grading run on this machine holds, and the open lock files that
    hold them (an exclusive `flock` each; closing a file, or the run's end, frees its slot). ``folder``: where
    the lock files live (default: one per user id in the system's temporary folder, which sandboxes do not
    see: they get a private /tmp)."""
    import fcntl  # POSIX only, like bwrap

    folder = Path(folder or Path(tempfile.gettempdir()) / f"metalib-sandbox-slots-{os.geteuid()}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    slots, held = [], []
    for slot in range(MAX_SLOTS):
        lock = open(folder / f"{slot}.lock", "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        slots.append(slot)
        held.append(lock)
        if len(slots) == n:
            return slots, held
    for lock in held:
        lock.close()
    raise SandboxUnavailable(f"{n} sandbox slots wanted but other grading runs hold all but {len(slots)} of "
                             f"{MAX_SLOTS} (lock files in {folder}): wait for them to finish, or use fewer --jobs")


def _namespaces() -> list[str]:
    """As root: no user namespace, so that `enter` can switch to an unprivileged user id of its own
    (RLIMIT_NPROC never binds root); otherwise bwrap's user namespace (it needs one)."""
    if os.geteuid() == 0:
        return ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return ["--unshare-all"]


def readable_roots() -> list[Path]:
    """Host folders the sandbox sees read-only: Python, its packages, the data (not metalib's own
    folder: the sandbox gets the grader's copy of the package, see `command`)."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent.parent}
    for entry in sys.path:
        p = Path(entry or ".").resolve()
        if "site-packages" in p.parts or "dist-packages" in p.parts:
            roots.add(p)
    for var in ("METALIB_DATA", "METALIB_CACHE", "METALIB_CHECKPOINTS"):
        if os.environ.get(var) and Path(os.environ[var]).is_dir():
            roots.add(Path(os.environ[var]).resolve())
    roots = {r.resolve() for r in roots if r.exists()}
    # drop roots inside other roots (one bind covers them)
    return sorted(r for r in roots if not any(o != r and r.is_relative_to(o) for o in roots))


def command(inner: list[str], job: Path, *, package: Path, slot: int = 0, limits: Limits = Limits()) -> list[str]:
    """The bwrap command that runs ``python inner...`` inside a sandbox.

    ``job`` (host folder, read-write) is mounted at `JOB_MOUNT`, the working directory. ``package``
    is the grader's copy of metalib (reference answers replaced, no bytecode), mounted read-only and
    first on the path; the installed metalib is hidden where a bound folder contains it.
    """
    import metalib

    cmd = [BWRAP, *_namespaces(), "--die-with-parent", "--new-session"]
    for top in ("/usr", "/etc"):
        cmd += ["--ro-bind", top, top]
    for link in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(link):
            cmd += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            cmd += ["--ro-bind", link, link]
    # the private /tmp first: mounted later it would hide any root below /tmp (a test's virtual environment)
    cmd += ["--perms", "1777", "--tmpfs", "/tmp"]
    roots = readable_roots()
    made = {Path("/"), Path("/usr"), Path("/etc"), Path("/tmp")}
    for root in roots:
        for parent in reversed(root.parents):  # bwrap would make them 0700: unreadable after `enter`
            if parent not in made:
                cmd += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
    for root in roots:
        if not str(root).startswith(("/usr/", "/etc/")):
            cmd += ["--ro-bind", str(root), str(root)]
    installed = Path(metalib.__file__).resolve().parent
    if any(installed.is_relative_to(r) for r in [*roots, Path("/usr")]):
        cmd += ["--tmpfs", str(installed), "--remount-ro", str(installed)]
    cmd += ["--dev", "/dev", "--proc", "/proc",
            "--perms", "0755", "--dir", LIB_MOUNT, "--ro-bind", str(package), f"{LIB_MOUNT}/metalib",
            "--perms", "0755", "--dir", JOB_MOUNT, "--bind", str(job), JOB_MOUNT, "--chdir", JOB_MOUNT]
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp",
           "PYTHONPATH": LIB_MOUNT, "MPLCONFIGDIR": "/tmp/matplotlib", "IPYTHONDIR": "/tmp/ipython",
           "JUPYTER_RUNTIME_DIR": "/tmp/jupyter", "JUPYTER_DATA_DIR": "/tmp/jupyter-data",
           "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "METALIB_QUICK": "1", "OMP_NUM_THREADS": "1",
           "LANG": "C.UTF-8"}
    for var in ("METALIB_DATA", "METALIB_CACHE", "METALIB_CHECKPOINTS"):
        if os.environ.get(var):
            env[var] = str(Path(os.environ[var]).resolve())
    cmd.append("--clearenv")
    for key, value in env.items():
        cmd += ["--setenv", key, value]
    uid = SANDBOX_UID_BASE + slot if os.geteuid() == 0 else -1
    cmd += ["--", sys.executable, f"{LIB_MOUNT}/metalib/grading/sandbox.py", "--enter", repr(asdict(limits)), str(uid),
            "--", *inner]
    return cmd


def enter(limits: dict, uid: int, argv: list[str]) -> None:
    """Inside the sandbox, before any student code: set the limits, then exec ``argv``."""
    import resource

    for name, value in [("RLIMIT_AS", limits["memory_bytes"]), ("RLIMIT_CPU", limits["cpu_seconds"]),
                        ("RLIMIT_FSIZE", limits["file_bytes"]), ("RLIMIT_NPROC", limits["processes"]),
                        ("RLIMIT_NOFILE", limits["open_files"]), ("RLIMIT_CORE", 0)]:
        resource.setrlimit(getattr(resource, name), (value, value))
    if uid >= 0:  # root outside: become the slot's own unprivileged user (drops every capability)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.execv(sys.executable, [sys.executable, *argv])


if __name__ == "__main__":
    import ast

    if len(sys.argv) < 5 or sys.argv[1] != "--enter" or sys.argv[4] != "--":
        sys.exit("usage: python -m metalib.grading.sandbox --enter LIMITS UID -- ARGS...")
    enter(ast.literal_eval(sys.argv[2]), int(sys.argv[3]), sys.argv[5:])
