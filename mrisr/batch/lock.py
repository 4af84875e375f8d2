"""Subject locks: two batch runs never work on the same subject of an output folder at once.

Each subject a run processes is locked with ``sub-<label>/log/sub-<label>_mrisr.lock`` in the
output folder: an advisory ``flock`` on the file, which records who holds it (pid, host, start
time, command). A second run that needs the subject stops at once and says who holds it; runs on
different subjects of the same folder (the Snakemake pipeline's per-subject jobs) do not meet.
The kernel releases a lock when its process dies, however it dies, so a lock left by a killed run
is simply taken over. The file is removed when the run releases it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

from mrisr.io.errors import MrisrInputError

__all__ = ["LockHeld", "SubjectLock", "lock_path", "lock_subjects"]


class LockHeld(MrisrInputError):
    """Another process holds the lock."""


def lock_path(output_dir: str | Path, label: str) -> Path:
    return Path(output_dir) / f"sub-{label}" / "log" / f"sub-{label}_mrisr.lock"


def _holder_text(fd: int) -> str:
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", errors="replace")
        info = json.loads(raw)
        text = f"pid {info['pid']} on {info['host']}, started {info['started']}"
        if info.get("command"):
            text += f": {info['command']}"
        return text
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that did not record itself"


class SubjectLock:
    """An acquired lock (release it, or use it as a context manager)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # removed while still held: a run that opens the path next creates a fresh file
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> SubjectLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(path: str | Path, what: str) -> SubjectLock:
    """Lock ``path`` for this process or raise :class:`LockHeld` naming the holder.

    Args:
        path: the lock file (its folder is created).
        what: the locked thing, for the message (``output/sub-01``).
    """
    from mrisr.io.guard import check_target

    try:
        import fcntl
    except ImportError:  # no flock (Windows): runs are not protected from each other
        fcntl = None
    path = check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder_text(fd)
            os.close(fd)
            raise LockHeld(
                f"{what}: in use by another mrisr batch run ({holder}); wait for it to finish or stop it, "
                "then run again"
            ) from None
        # the previous holder may have removed the file between our open and flock: lock the new one
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:
            os.close(fd)
            continue
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        return SubjectLock(path, fd)


@contextlib.contextmanager
def lock_subjects(output_dir: str | Path, labels: list[str]):
    """Lock every subject in ``labels`` (all or none: a held one releases the others and raises).

    Raises:
        LockHeld: naming the subject and the run that holds it.
    """
    locks: list[SubjectLock] = []
    try:
        for label in labels:
            locks.append(acquire(lock_path(output_dir, label), f"{Path(output_dir) / f'sub-{label}'}"))
        yield locks
    finally:
        for lock in locks:
            lock.release()
