"""Worker processes of a parallel batch run (``--jobs N``): one subject per task."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from mrisr.batch.resume import SubjectPlan
from mrisr.batch.summary import SubjectResult
from mrisr.batch.validation import RunSettings
from mrisr.io.errors import one_line

__all__ = ["run_pool"]


def _worker_context():
    """Workers must start clean (no inherited torch thread pools or CUDA state), yet importing torch
    in every worker costs seconds: a fork server imports the heavy modules once and forks workers
    from that single-threaded process. Where there is no fork (Windows), spawn."""
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["mrisr.batch.runner", "mrisr.reconstruct", "mrisr.metrics"])
        return context
    return multiprocessing.get_context("spawn")


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


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

    from mrisr.batch.runner import process_subject

    threads = settings.threads or max(1, (os.cpu_count() or 1) // workers)
    worker_settings = replace(settings, threads=threads)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=_worker_context(), initializer=_init_worker, initargs=(threads,)
    )
    futures = {}
    try:
        for plan in todo:
            futures[pool.submit(process_subject, plan, worker_settings, None, cohort_root)] = plan
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
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
