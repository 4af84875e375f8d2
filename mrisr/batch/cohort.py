"""The cohort a batch run works on: subjects, their dynamic series and the files that go with them.

Discovery (:mod:`mrisr.batch.bids`, :mod:`mrisr.batch.manifest`, :func:`mrisr.batch.discovery.discover`)
fills these types; every problem found on the way is reported together in one
:class:`BatchValidationError` before any work starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mrisr.batch.config import BatchConfig
from mrisr.io.errors import MrisrInputError

__all__ = [
    "BatchValidationError",
    "Cohort",
    "LABEL_RE",
    "SeriesInputs",
    "SubjectInputs",
    "normalise_label",
    "normalise_session",
    "select_labels",
]

LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")


class BatchValidationError(MrisrInputError):
    """Every problem found in a cohort before running, as one message (one problem per line).

    Attributes:
        source: the BIDS folder or manifest.
        problems: one line per problem, each naming the file or row, what is wrong and the fix.
    """

    def __init__(self, source: str | Path, problems: list[str]) -> None:
        self.source = Path(source)
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(
            f"{source}: {count} problem{'s' if count != 1 else ''} found, nothing was run; fix "
            f"{'them' if count != 1 else 'it'} and run again:\n{lines}"
        )


@dataclass(frozen=True)
class SeriesInputs:
    """One dynamic series to super-resolve and the files that go with it.

    Attributes:
        subject: participant label without ``sub-``.
        session: session label without ``ses-``, or ``None``.
        dynamic: the LR series ``(X, Y, Z, T)``.
        planning: the static HR planning scan ``(X, Y, Z)`` used as prior (and for fine-tuning), or ``None``.
        ground_truth: HR reference series on the SR grid, or ``None``.
        datatype: BIDS folder of the outputs (``func``, ``anat``, ...).
        entities: ordered BIDS entities of the output name (``sub``, ``ses``, ``task``, ...), no ``desc``.
        suffix: BIDS suffix of the output name (``bold``, ...).
    """

    subject: str
    session: str | None
    dynamic: Path
    planning: Path | None
    ground_truth: Path | None
    datatype: str
    entities: tuple[tuple[str, str], ...]
    suffix: str

    def files(self) -> dict[str, Path]:
        """The input files by role (``dynamic``, ``planning``, ``ground_truth``) that exist in this series."""
        roles = {"dynamic": self.dynamic, "planning": self.planning, "ground_truth": self.ground_truth}
        return {role: path for role, path in roles.items() if path is not None}


@dataclass
class SubjectInputs:
    """A participant: the unit of work (one job, one row of ``summary.tsv``)."""

    label: str
    series: list[SeriesInputs] = field(default_factory=list)


@dataclass
class Cohort:
    """Validated inputs of a batch run.

    Attributes:
        source: the BIDS folder or the manifest file.
        kind: ``"bids"`` or ``"manifest"``.
        root: folder that relative input names refer to (the BIDS folder, or the manifest's folder).
        subjects: selected participants by label, sorted.
        name: dataset name (BIDS ``Name`` or the manifest's file name).
        config: the batch configuration used to find them.
    """

    source: Path
    kind: str
    root: Path
    subjects: dict[str, SubjectInputs]
    name: str
    config: BatchConfig

    @property
    def labels(self) -> list[str]:
        return list(self.subjects)


def normalise_label(label: str) -> str:
    """``"sub-01"`` or ``" 01 "`` -> ``"01"``."""
    label = str(label).strip()
    return label[4:] if label.startswith("sub-") else label


def normalise_session(session: str) -> str:
    """``"ses-pre"`` or ``" pre "`` -> ``"pre"``."""
    session = str(session).strip()
    return session[4:] if session.startswith("ses-") else session


def select_labels(available: list[str], labels: list[str] | None, where: str, problems: list[str]) -> list[str]:
    """The participants ``labels`` asks for among ``available`` (all when ``labels`` is empty), sorted.

    A label that is not available is added to ``problems`` (naming ``where``) and left out.
    """
    if not labels:
        return sorted(available)
    selected = []
    for raw in labels:
        label = normalise_label(raw)
        if label not in available and label.isdigit():
            # 1 for 01 (YAML and Snakemake's --config read 01 as the number 1), when unambiguous
            same = [a for a in available if a.isdigit() and int(a) == int(label)]
            label = same[0] if len(same) == 1 else label
        if label not in available:
            problems.append(
                f"--participant-label {raw}: no participant '{label}' in {where} "
                f"(available: {', '.join(sorted(available)) or 'none'})"
            )
        elif label not in selected:
            selected.append(label)
    return sorted(selected)

