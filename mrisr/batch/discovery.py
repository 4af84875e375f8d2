"""Find and validate a cohort's inputs: a BIDS dataset (:mod:`mrisr.batch.bids`) or a CSV/TSV
manifest (:mod:`mrisr.batch.manifest`).

Every problem (missing files, duplicate subjects, unknown participant labels, bad columns,
ambiguous matches, colliding outputs) is collected first and reported together in one
:class:`~mrisr.batch.cohort.BatchValidationError`, before any work starts.
"""

from __future__ import annotations

from pathlib import Path

from mrisr.batch.bids import discover_bids
from mrisr.batch.cohort import BatchValidationError, Cohort
from mrisr.batch.config import BatchConfig
from mrisr.batch.manifest import discover_manifest

__all__ = ["discover"]


def discover(
    source: str | Path,
    config: BatchConfig | None = None,
    participant_labels: list[str] | None = None,
    problems: list[str] | None = None,
) -> Cohort:
    """Find a cohort's inputs in a BIDS folder or a ``.csv``/``.tsv`` manifest and validate them.

    Args:
        source: BIDS dataset folder, or manifest file.
        config: matching rules and naming; default :class:`BatchConfig`.
        participant_labels: subjects to select (``01`` or ``sub-01``); ``None``/empty: all.
        problems: a list to append problems to instead of raising (the caller adds its own
            checks and raises once).

    Returns:
        The :class:`Cohort` of the selected subjects.

    Raises:
        BatchValidationError: listing every problem, unless ``problems`` was given.
    """
    source = Path(source).expanduser()
    config = config or BatchConfig()
    collected: list[str] = [] if problems is None else problems
    start = len(collected)
    if not source.exists():
        collected.append(f"{source}: not found; pass a BIDS dataset folder or a .csv/.tsv manifest")
        cohort = Cohort(source=source, kind="bids", root=source, subjects={}, name=source.name, config=config)
    elif source.is_dir():
        cohort = discover_bids(source.resolve(), config, participant_labels, collected)
    elif source.suffix.lower() in (".csv", ".tsv"):
        cohort = discover_manifest(source.resolve(), config, participant_labels, collected)
    else:
        collected.append(
            f"{source}: neither a folder nor a .csv/.tsv manifest; pass a BIDS dataset folder or a manifest"
        )
        cohort = Cohort(
            source=source, kind="manifest", root=source.parent, subjects={}, name=source.name, config=config
        )
    if problems is None and len(collected) > start:
        raise BatchValidationError(source, collected)
    return cohort
