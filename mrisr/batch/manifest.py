"""Manifest inputs: a ``.csv`` or ``.tsv`` file listing each subject's files.

Columns ``subject, dynamic, planning`` and optionally ``ground_truth`` and ``session``; one row per
subject (per subject and session); relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mrisr.batch.bids import BIDS_DATATYPES, parse_bids_name
from mrisr.batch.cohort import (
    LABEL_RE,
    Cohort,
    SeriesInputs,
    SubjectInputs,
    normalise_label,
    normalise_session,
    select_labels,
)
from mrisr.batch.config import BatchConfig
from mrisr.io.configfile import read_config_text
from mrisr.io.errors import MrisrInputError

__all__ = ["MANIFEST_COLUMNS", "discover_manifest"]

MANIFEST_REQUIRED = ("subject", "dynamic", "planning")
MANIFEST_OPTIONAL = ("ground_truth", "session")
MANIFEST_COLUMNS = MANIFEST_REQUIRED + MANIFEST_OPTIONAL


#: the largest manifest read (a row is a few hundred bytes: tens of thousands of subjects)
MAX_MANIFEST_BYTES = 64 << 20


def _parse_rows(path: Path, text: str, delimiter: str, problems: list[str]) -> list[tuple[int, list[str]]]:
    """Rows of the whole text parsed as CSV (quotes may span lines), each with the line it starts on;
    blank rows and ``#`` comment rows are left out. A field holding a line break is a problem: no
    path or label has one, and splitting it would turn one row into another subject."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not any(field.strip() for field in row) or row[0].lstrip().startswith("#"):
                continue
            if any("\n" in field or "\r" in field for field in row):
                problems.append(
                    f"{path}: line {line}: a quoted field holds a line break (lines {line}-{reader.line_num}); "
                    "close the quote on the same line (one row per subject)"
                )
                continue
            rows.append((line, row))
    except csv.Error as exc:
        problems.append(f"{path}: line {reader.line_num}: not valid CSV ({exc}); check the quotes")
        return []
    return rows


def _read_manifest(path: Path, problems: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        text = read_config_text(path, "manifest", limit=MAX_MANIFEST_BYTES)
    except MrisrInputError as exc:
        problems.append(f"{exc}; pass a UTF-8 .csv or .tsv file")
        return [], []
    numbered = _parse_rows(path, text, delimiter, problems)
    rows = [row for _, row in numbered]
    if not rows:
        problems.append(f"{path}: manifest is empty; it needs a header row 'subject,dynamic,planning[,ground_truth]'")
        return [], []
    header = [column.strip().lower() for column in rows[0]]
    other = "\t" if delimiter == "," else ","
    if len(header) == 1 and other in rows[0][0]:
        kind, extension = ("tab", "tsv") if other == "\t" else ("comma", "csv")
        problems.append(f"{path}: the header looks {kind}-separated; name the file .{extension}")
        return [], []
    if len(rows) == 1:
        problems.append(f"{path}: manifest has a header but no rows; add one row per subject")
    records = []
    for number, row in numbered[1:]:
        if len(row) != len(header):
            problems.append(f"{path}: line {number} has {len(row)} fields, the header has {len(header)}; fix the row")
            continue
        records.append({"_line": str(number), **{column: value.strip() for column, value in zip(header, row)}})
    return header, records


def discover_manifest(path: Path, config: BatchConfig, labels: list[str] | None, problems: list[str]) -> Cohort:
    """The :class:`Cohort` of the manifest ``path`` (selected ``labels``, all when empty).

    Every problem found is appended to ``problems``; nothing is raised.
    """
    root = path.parent
    header, records = _read_manifest(path, problems)
    columns_ok = True
    if header:
        missing = [c for c in MANIFEST_REQUIRED if c not in header]
        unknown = [c for c in header if c not in MANIFEST_COLUMNS]
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if missing:
            problems.append(
                f"{path}: missing column(s) {', '.join(missing)}; the header needs {', '.join(MANIFEST_REQUIRED)}"
            )
        if unknown:
            problems.append(f"{path}: unknown column(s) {', '.join(unknown)}; allowed: {', '.join(MANIFEST_COLUMNS)}")
        if duplicated:
            problems.append(f"{path}: column(s) {', '.join(duplicated)} appear more than once; keep one of each")
        columns_ok = not (missing or duplicated)
    else:
        columns_ok = False
    if not columns_ok:
        return Cohort(source=path, kind="manifest", root=root, subjects={}, name=path.name, config=config)

    seen: dict[tuple[str, str | None], str] = {}
    valid: list[dict[str, str]] = []
    for record in records:
        line = record["_line"]
        raw_label = record.get("subject", "")
        label = normalise_label(raw_label)
        session = normalise_session(record.get("session", "")) or None
        where = f"{path}: line {line}"
        if not label:
            problems.append(f"{where}: empty subject; give a participant label such as 01")
            continue
        if not LABEL_RE.match(label):
            problems.append(f"{where}: subject '{raw_label}' is not a BIDS label (letters and digits only, e.g. 01)")
            continue
        if session is not None and not LABEL_RE.match(session):
            problems.append(f"{where}: session '{record['session']}' is not a BIDS label (letters and digits only)")
            continue
        key = (label, session)
        if key in seen:
            problems.append(
                f"{where}: duplicate subject {label}{f' session {session}' if session else ''} "
                f"(also on line {seen[key]}); keep one row per subject"
                + ("" if session else " or add a session column")
            )
            continue
        seen[key] = line
        record["_label"], record["_session"] = label, session or ""
        valid.append(record)

    available = sorted({r["_label"] for r in valid})
    selected = set(select_labels(available, labels, str(path), problems))
    subjects: dict[str, SubjectInputs] = {}
    for record in valid:
        label = record["_label"]
        if label not in selected:
            continue
        series = _manifest_series(path, root, record, config, problems)
        subject = subjects.setdefault(label, SubjectInputs(label=label))
        if series is not None:
            subject.series.append(series)
    subjects = {label: subjects[label] for label in sorted(subjects)}
    return Cohort(source=path, kind="manifest", root=root, subjects=subjects, name=path.stem, config=config)


def _manifest_file(
    path: Path, root: Path, record: dict[str, str], column: str, required: bool, problems: list[str]
) -> tuple[Path | None, bool]:
    value = record.get(column, "")
    where = f"{path}: line {record['_line']} (subject {record['_label']})"
    if not value:
        if required:
            problems.append(f"{where}: empty {column}; give the path of the {column.replace('_', ' ')} image")
            return None, False
        return None, True
    file = Path(value).expanduser()
    file = file if file.is_absolute() else root / file
    if not file.exists():
        problems.append(
            f"{where}: {column} {value} not found (looked at {file}); fix the path (relative paths are relative to {root})"
        )
        return None, False
    if file.is_dir() and not any(file.iterdir()):
        problems.append(f"{where}: {column} {value} is an empty folder; give an image file")
        return None, False
    if not file.is_dir() and not file.is_file():
        # a device, FIFO or socket (/dev/zero, /dev/stdin) never ends or cannot be read twice
        problems.append(f"{where}: {column} {value} is not a regular file; give an image file")
        return None, False
    return file, True


def _manifest_series(
    path: Path, root: Path, record: dict[str, str], config: BatchConfig, problems: list[str]
) -> SeriesInputs | None:
    label, session = record["_label"], record["_session"] or None
    dynamic, ok_dynamic = _manifest_file(path, root, record, "dynamic", True, problems)
    planning, ok_planning = _manifest_file(path, root, record, "planning", config.planning_required, problems)
    truth, ok_truth = _manifest_file(path, root, record, "ground_truth", False, problems)
    if not (ok_dynamic and ok_planning and ok_truth) or dynamic is None:
        return None
    parsed = parse_bids_name(dynamic.name)
    datatype, suffix = config.manifest.datatype, config.manifest.suffix
    entities: list[tuple[str, str]] = [("sub", label)] + ([("ses", session)] if session else [])
    if parsed is not None:
        source_entities, suffix, _ = parsed
        entities += [(k, v) for k, v in source_entities if k not in ("sub", "ses", "desc")]
        if dynamic.parent.name in BIDS_DATATYPES:
            datatype = dynamic.parent.name
    return SeriesInputs(
        subject=label,
        session=session,
        dynamic=dynamic,
        planning=planning,
        ground_truth=truth,
        datatype=datatype,
        entities=tuple(entities),
        suffix=suffix,
    )

