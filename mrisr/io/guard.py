"""The write guard: every file mrisr writes is checked here first, and written under a temporary name.

Two promises are kept in this one place:

* **inputs are never overwritten.** A target that is, or resolves to, a file the command reads
  (same path, a symbolic link to it, or a hard link: same device and inode) is refused. Files
  read inside a :func:`write_scope` (every image :func:`mrisr.io.load` reads, every checkpoint
  :func:`mrisr.models.checkpoint.read_metadata` reads) are registered as inputs automatically;
  more can be passed explicitly.
* **nothing is written outside the output folder** of a scope opened with ``confine_to`` (the
  batch runner's derivatives folder): a target whose real path, symbolic links followed, lies
  elsewhere is refused, so a subject folder that is a link to another place is never written into.

Writers create their temporary file with :func:`partial_file` (``.<name>.<pid>.<random>.partial``
next to the target); it removes partials of the same target left by processes that no longer
exist (a ``kill -9``, a power cut), so hidden files do not pile up.

Example:
    >>> with write_scope(inputs=["scan.nii.gz"]):  # doctest: +SKIP
    ...     check_target("scan.nii.gz")
    MrisrInputError: scan.nii.gz: output path is the same as the input scan.nii.gz; choose another name with -o
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mrisr.io.errors import MrisrInputError, one_line

__all__ = [
    "WriteScope",
    "check_target",
    "folder_lock",
    "is_stale_partial",
    "make_folder",
    "partial_file",
    "pid_alive",
    "register_input",
    "release_input",
    "remove_created_folders",
    "remove_own_partials",
    "remove_stale_partials",
    "write_errors",
    "write_scope",
]

PARTIAL_MARK = ".partial"
#: folders this process has created temporary files in (see :func:`remove_own_partials`)
_PARTIAL_FOLDERS: set[Path] = set()


@dataclass(frozen=True)
class _Input:
    path: Path  # as given
    real: str  # symbolic links resolved
    device_inode: tuple[int, int] | None


def _describe(path: str | Path) -> _Input:
    path = Path(path)
    try:
        st = os.stat(path)
        ident = (st.st_dev, st.st_ino)
    except OSError:
        ident = None
    return _Input(path, os.path.realpath(path), ident)


@dataclass
class WriteScope:
    """Inputs of one command (or one batch subject) and, optionally, the folder all writes must stay in."""

    inputs: list[_Input] = field(default_factory=list)
    confine_to: Path | None = None
    #: folders :func:`make_folder` created in this scope, outermost first
    created: list[Path] = field(default_factory=list)

    def add(self, path: str | Path) -> None:
        described = _describe(path)
        if all(known.real != described.real for known in self.inputs):
            self.inputs.append(described)


_SCOPE: contextvars.ContextVar[WriteScope | None] = contextvars.ContextVar("mrisr_write_scope", default=None)


@contextlib.contextmanager
def write_scope(inputs: Iterable[str | Path | None] = (), confine_to: str | Path | None = None) -> Iterator[WriteScope]:
    """Open a scope: files read in it count as inputs, writes in it are checked against them.

    A nested scope starts with its parent's inputs and folder (a batch subject inside the batch run).

    Args:
        inputs: files the command reads (``None`` entries are ignored).
        confine_to: folder every write must resolve into (symbolic links followed).
    """
    parent = _SCOPE.get()
    scope = WriteScope(
        inputs=list(parent.inputs) if parent else [],
        confine_to=Path(confine_to) if confine_to is not None else (parent.confine_to if parent else None),
        created=parent.created if parent else [],
    )
    for path in inputs:
        if path is not None:
            scope.add(path)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` while a command writes its set of files there.

    A second writer of the same folder (another ``mrisr phantom -o`` on it) is refused at once
    instead of interleaving its files with the first's. The lock is the kernel's ``flock`` on the
    folder itself: nothing is left in the folder, and it is released when the process ends however
    it ends. Where ``flock`` does not exist (Windows) nothing is locked.

    Raises:
        MrisrInputError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MrisrInputError(
                f"{folder}: another process is writing {what} into this folder right now; wait for it to finish "
                "or choose another output folder"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def make_folder(folder: str | Path) -> Path:
    """Create ``folder`` and its missing parents, remembering (in the current scope) which ones were
    new, so that a failed command can remove them again (:func:`remove_created_folders`).

    Raises:
        OSError: the folder cannot be created.
    """
    folder = Path(folder) if str(folder) else Path(".")
    missing = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    folder.mkdir(parents=True, exist_ok=True)
    scope = _SCOPE.get()
    if scope is not None:
        for made in reversed(missing):
            if made not in scope.created:
                scope.created.append(made)
    return folder


def remove_created_folders(scope: WriteScope) -> list[Path]:
    """Remove the folders :func:`make_folder` created in ``scope`` that are empty, deepest first.

    A folder that holds anything (another process's file, a kept result) stays. Returns the removed folders.
    """
    removed = []
    for folder in reversed(scope.created):
        with contextlib.suppress(OSError):
            folder.rmdir()
            removed.append(folder)
    scope.created.clear()
    return removed


def register_input(path: str | Path) -> None:
    """Record ``path`` as an input of the current scope (nothing happens outside a scope)."""
    scope = _SCOPE.get()
    if scope is not None:
        scope.add(path)


def release_input(path: str | Path) -> None:
    """Let the current scope replace ``path`` although it was read: only for a command whose
    purpose is to continue that very file (``mrisr train --resume X -o X``)."""
    scope = _SCOPE.get()
    if scope is not None:
        real = os.path.realpath(path)
        scope.inputs = [inp for inp in scope.inputs if inp.real != real]


def check_target(path: str | Path, inputs: Iterable[str | Path | None] = ()) -> Path:
    """Refuse a write target that is an input of the command or escapes the scope's folder.

    Args:
        path: the file about to be written.
        inputs: inputs to check besides those of the current scope.

    Raises:
        MrisrInputError: naming the target, the input or folder it collides with, and the fix.
    """
    path = Path(path)
    scope = _SCOPE.get()
    known = [_describe(p) for p in inputs if p is not None] + (scope.inputs if scope else [])
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
        ident: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except OSError:
        ident = None
    for inp in known:
        same_file = ident is not None and inp.device_inode == ident
        if real == inp.real or same_file:
            how = ""
            if os.path.islink(path):
                how = " (through a symbolic link)"
            elif same_file and real != inp.real:
                how = " (a hard link to it)"
            raise MrisrInputError(
                f"{path}: output path is the same as the input {inp.path}{how}; inputs are never overwritten, "
                "choose another name with -o"
            )
    if scope is not None and scope.confine_to is not None:
        root = os.path.realpath(scope.confine_to)
        if os.path.commonpath([root, real]) != root:
            raise MrisrInputError(
                f"{path}: resolves to {real}, outside the output folder {scope.confine_to} (a symbolic link on the "
                "way); replace the link by a real folder or choose another output folder"
            )
    return path


@contextlib.contextmanager
def write_errors(path: str | Path) -> Iterator[None]:
    """Report a failed write (disk full, quota, permissions) as one line naming the file being written."""
    try:
        yield
    except MrisrInputError:
        raise
    except OSError as exc:
        raise MrisrInputError(
            f"{path}: cannot write ({exc.strerror or one_line(exc)}); nothing was written, free some space "
            "or choose another location"
        ) from None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    except OSError:
        return False
    return True


_PARTIAL_NAME = re.compile(r"^\.(?P<target>.+?)(?:\.(?P<pid>\d+))?\.[A-Za-z0-9_]+\.partial")


def is_stale_partial(name: str, target_name: str | None = None) -> bool:
    """Whether ``name`` is a temporary file (of ``target_name``, if given) whose writer is gone.

    ``.<target>.<pid>.<random>.partial*`` belongs to process ``pid``; a partial without a pid (an
    older naming) has no owner that could still be running.
    """
    match = _PARTIAL_NAME.match(name)
    if match is None or (target_name is not None and match["target"] != target_name):
        return False
    return match["pid"] is None or not pid_alive(int(match["pid"]))


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Remove the temporary files of ``path`` left by processes that no longer exist.

    Partials of a live process (another run writing the same file right now) are kept.

    Returns:
        The files removed.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix) or not entry.is_file(follow_symlinks=False):
            continue
        if is_stale_partial(entry.name, path.name):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def partial_file(path: str | Path, extension: str = "") -> Path:
    """Check ``path`` with :func:`check_target`, clear its stale partials and create its temporary file.

    Args:
        path: the final file.
        extension: appended after ``.partial`` (writers that pick the format from the name need it).

    Returns:
        An empty, owner-only temporary file in the target's folder; rename it onto ``path`` when complete.
    """
    path = check_target(path)
    remove_stale_partials(path)
    _PARTIAL_FOLDERS.add(path.parent)
    fd, name = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=f"{PARTIAL_MARK}{extension}", dir=path.parent
    )
    os.close(fd)
    return Path(name)


def remove_own_partials() -> list[Path]:
    """Delete the temporary files this process created and has not renamed yet; the removed paths.

    Writers remove their temporary file in a ``finally``, but a signal can land between the file's
    creation and that ``try``; after an interruption this sweeps the folders this process wrote
    in for names carrying its pid (other processes' files are left alone).
    """
    mine = re.compile(rf"^\..+\.{os.getpid()}\.[^.]+{re.escape(PARTIAL_MARK)}")
    removed: list[Path] = []
    for folder in list(_PARTIAL_FOLDERS):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if mine.match(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed
