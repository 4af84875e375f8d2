"""Resumable cohort runner: skip what is up to date, isolate failures, run subjects in parallel.

One subject is one unit of work (all its dynamic series). Validation lives in
:mod:`mrisr.batch.validation`, fingerprints and the up-to-date test in :mod:`mrisr.batch.resume`,
running one subject in :mod:`mrisr.batch.subject`, worker processes in :mod:`mrisr.batch.workers`
and subject results in :mod:`mrisr.batch.summary`.

Example:
    >>> cohort, settings = validate_batch("bids/", "bids/derivatives/mrisr")  # doctest: +SKIP
    >>> results = run_batch(cohort, "bids/derivatives/mrisr", settings, jobs=2)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from mrisr.batch.cohort import Cohort
from mrisr.batch.derivatives import write_dataset_description, write_summary
from mrisr.batch.lock import lock_subjects
from mrisr.batch.resume import SubjectPlan, plan_subject, up_to_date
from mrisr.batch.subject import failed_before_start, process_subject
from mrisr.batch.summary import SubjectResult, collect_summary, result_from_blocks, write_collected_summary
from mrisr.batch.validation import RunSettings, output_location_problem, validate_batch
from mrisr.io.errors import MrisrInputError
from mrisr.io.guard import write_scope

__all__ = [
    "Reporter",
    "RunSettings",
    "SubjectPlan",
    "SubjectResult",
    "collect_summary",
    "plan_subject",
    "process_subject",
    "run_batch",
    "validate_batch",
    "write_collected_summary",
]


class Reporter(Protocol):
    """Progress hooks of :func:`run_batch` (the CLI draws a rich bar with them)."""

    def start(self, total: int) -> None: ...

    def subject_started(self, label: str, frames: int | None) -> None: ...

    def frame(self, label: str, index: int, total: int) -> None: ...

    def subject_finished(self, result: SubjectResult) -> None: ...


class _SilentReporter:
    def start(self, total: int) -> None:
        pass

    def subject_started(self, label: str, frames: int | None) -> None:
        pass

    def frame(self, label: str, index: int, total: int) -> None:
        pass

    def subject_finished(self, result: SubjectResult) -> None:
        pass



def run_batch(
    cohort: Cohort,
    output_dir: str | Path,
    settings: RunSettings,
    jobs: int = 1,
    reporter: Reporter | None = None,
    summary: bool = True,
) -> list[SubjectResult]:
    """Process a validated cohort into a BIDS derivatives dataset; resumable and failure-isolated.

    Args:
        cohort: from :func:`validate_batch` (or :func:`mrisr.batch.discover`).
        output_dir: derivatives folder (created).
        settings: from :func:`validate_batch`.
        jobs: subjects processed in parallel worker processes (torch threads are split).
        reporter: progress hooks (e.g. the CLI's rich bar).
        summary: write ``summary.tsv`` (after every subject, so it is current even after a kill).

    Returns:
        One :class:`SubjectResult` per subject, in label order; a failing subject is a
        ``failed`` result (logged, in ``summary.tsv``), never an exception.

    Raises:
        OSError: the derivatives folder itself cannot be written.
        MrisrInputError: the output folder lies in a raw dataset or holds an input folder.
        KeyboardInterrupt: passed on after the outputs in progress were removed.
    """
    output_dir = Path(output_dir)
    problem = output_location_problem(output_dir, cohort)  # also for callers that skipped validate_batch
    if problem is not None:
        raise MrisrInputError(problem)
    output_dir.mkdir(parents=True, exist_ok=True)
    reporter = reporter or _SilentReporter()
    # nothing is written outside the output folder, and no other run works on these subjects meanwhile
    with write_scope(confine_to=output_dir), lock_subjects(output_dir, list(cohort.subjects)):
        return _run_locked(cohort, output_dir, settings, jobs, reporter, summary)


def _run_locked(
    cohort: Cohort, output_dir: Path, settings: RunSettings, jobs: int, reporter: Reporter, summary: bool
) -> list[SubjectResult]:
    write_dataset_description(output_dir, cohort)
    reporter.start(len(cohort.subjects))
    results: dict[str, SubjectResult] = {}

    def finished(result: SubjectResult) -> None:
        results[result.subject] = result
        reporter.subject_finished(result)
        if summary:
            write_summary(output_dir, [result.row()])

    model_cache: dict[str, dict[str, str]] = {}
    todo: list[SubjectPlan] = []
    for subject in cohort.subjects.values():
        try:
            plan = plan_subject(subject, output_dir, settings, model_cache)
        except Exception as exc:  # an unreadable or truncated input: this subject fails, the others go on
            finished(failed_before_start(subject.label, output_dir, exc))
            continue
        blocks = None if settings.force else up_to_date(plan)
        if blocks is not None:
            finished(result_from_blocks(subject.label, "skipped", blocks))
        else:
            todo.append(plan)

    workers = min(jobs, len(todo))
    if workers <= 1:
        for plan in todo:
            reporter.subject_started(plan.label, None)
            finished(
                process_subject(
                    plan,
                    settings,
                    on_frame=lambda i, n, label=plan.label: reporter.frame(label, i, n),
                    cohort_root=cohort.root,
                )
            )
    else:
        from mrisr.batch.workers import run_pool

        run_pool(todo, settings, workers, cohort.root, finished)
    if summary:
        write_summary(output_dir, [results[label].row() for label in results])
    return [results[label] for label in cohort.labels if label in results]
