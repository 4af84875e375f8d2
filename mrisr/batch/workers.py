"""Worker processes of a parallel batch run (``--jobs N``): one subject per task.

Workers never outlive the run, however it ends. Their parent is the fork server, not the run,
and the fork server lives as long as any worker (each holds its "alive" pipe), so a parent-death
signal alone cannot tell a worker that the run is gone: each worker also watches the run's
process (a pidfd on Linux, else polling) and sends itself SIGTERM when it exits, SIGKILL
included; ``prctl(PR_SET_PDEATHSIG)`` covers the fork server dying first. An interrupted run stops
its workers itself. A worker ignores SIGINT (Ctrl-C reaches the whole process group; the run
stops its workers) and treats SIGTERM like Ctrl-C: the outputs in progress are removed while the
interruption unwinds, and it takes no further subject; an idle worker leaves quietly.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mrisr.batch.resume import SubjectPlan
from mrisr.batch.subject import process_subject, remove_stale_partials
from mrisr.batch.summary import SubjectResult
from mrisr.batch.validation import RunSettings
from mrisr.io.errors import one_line
from mrisr.io.guard import pid_alive

__all__ = ["run_pool"]


def _worker_context():
    """Workers must start clean (no inherited torch thread pools or CUDA state), yet importing torch
    in every worker costs seconds: a fork server imports the heavy modules once and forks workers
    from that single-threaded process. Where there is no fork (Windows), spawn."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(
            ["mrisr.batch.subject", "mrisr.batch.workers", "mrisr.reconstruct", "mrisr.metrics"]
        )
        return context
    return multiprocessing.get_context("spawn")


#: seconds an interrupted worker gets to remove its partial outputs before it is killed
STOP_GRACE_S = 20.0
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux only).

    Returns:
        Whether the request was made.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


#: whether this worker is processing a subject (then SIGTERM unwinds it so its partial outputs go)
_BUSY = False


def _terminate_as_interrupt(signum, frame) -> None:
    """SIGTERM in a worker: unwind the subject in progress like Ctrl-C (its partial outputs are removed),
    or, between subjects, leave at once and quietly (an interruption raised inside the pool's queue
    would be printed as a traceback)."""
    if _BUSY:
        raise KeyboardInterrupt
    os._exit(128 + signum)


def _watch_run(run_pid: int) -> None:
    """Wait (in a thread) for the run's process to exit, then SIGTERM this worker."""
    try:
        handle = os.pidfd_open(run_pid)
    except (AttributeError, OSError):  # no pidfd (old kernel, not Linux) or the run is already gone
        handle = None
    if handle is not None:
        select.select([handle], [], [])
        os.close(handle)
    else:
        while pid_alive(run_pid):
            time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(threads: int, run_pid: int) -> None:
    # Ctrl-C reaches the whole process group: the run catches it and stops its workers with SIGTERM,
    # so a worker ignores SIGINT itself (else it would die in the pool's queue, printing a traceback)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    die_with_parent(signal.SIGTERM)
    threading.Thread(target=_watch_run, args=(run_pid,), name="mrisr-watch-run", daemon=True).start()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _process_in_worker(plan: SubjectPlan, settings: RunSettings, cohort_root: Path | None) -> SubjectResult:
    global _BUSY
    _BUSY = True
    try:
        return process_subject(plan, settings, None, cohort_root)
    except KeyboardInterrupt:
        # the outputs in progress were removed while the interruption unwound; take no further subject
        os._exit(130)
    finally:
        _BUSY = False


def _stop_workers(processes: list) -> None:
    """SIGTERM every worker, give it time to clean up, then SIGKILL what is left."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5)


def run_pool(
    todo: list[SubjectPlan],
    settings: RunSettings,
    workers: int,
    cohort_root: Path | None,
    finished: Callable[[SubjectResult], None],
) -> None:
    """Process ``todo`` in ``workers`` processes (torch threads split between them), calling
    ``finished`` with each subject's result as it arrives."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = settings.threads or max(1, (os.cpu_count() or 1) // workers)
    worker_settings = replace(settings, threads=threads)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=_worker_context(), initializer=_init_worker, initargs=(threads, os.getpid())
    )
    futures = {}
    try:
        for plan in todo:
            futures[pool.submit(_process_in_worker, plan, worker_settings, cohort_root)] = plan
        for future in as_completed(futures):
            plan = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # the worker process died (out of memory, killed)
                result = SubjectResult(
                    plan.label,
                    "failed",
                    error=f"worker process died ({one_line(exc)}); see {plan.log}; rerun to retry",
                    log=plan.log,
                )
            finished(result)
    except BaseException:
        # the pool forgets its processes on shutdown: take the list first
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_workers(processes)
        for plan in todo:  # what a worker killed mid-write left behind
            remove_stale_partials(plan.log.parent.parent)
        raise
    pool.shutdown(wait=True)
