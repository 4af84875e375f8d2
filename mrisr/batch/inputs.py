"""Find and validate a cohort's inputs: a BIDS dataset or a CSV/TSV manifest.

Every problem (missing files, duplicate subjects, unknown participant labels, bad columns,
ambiguous matches, colliding outputs) is collected first and reported together in one
:class:`BatchValidationError`, before any work starts.

BIDS (see :mod:`mrisr.batch.config` for the matching rules): each ``sub-<label>/`` (and each
``ses-<label>/`` inside it) is searched for dynamic series; every dynamic series gets the
planning scan of its session and, if one matches, a ground truth paired by entities.

Manifest: a ``.csv`` or ``.tsv`` file with the columns ``subject, dynamic, planning`` and
optionally ``ground_truth`` and ``session``; one row per subject (per subject and session);
relative paths are relative to the manifest's folder.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from mrisr.batch.config import BatchConfig
from mrisr.io.errors import MrisrInputError

__all__ = [
    "BatchValidationError",
    "Cohort",
    "MANIFEST_COLUMNS",
    "SeriesInputs",
    "SubjectInputs",
    "discover",
    "normalise_label",
    "parse_bids_name",
]

LABEL_RE = re.compile(r"^[A-Za-z0-9]+$")
MANIFEST_REQUIRED = ("subject", "dynamic", "planning")
MANIFEST_OPTIONAL = ("ground_truth", "session")
MANIFEST_COLUMNS = MANIFEST_REQUIRED + MANIFEST_OPTIONAL
#: entities that tell a ground truth (or a derivative) apart from the series it belongs to
PAIRING_IGNORED = ("acq", "rec", "desc")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
#: file names a cohort folder is searched for: NIfTI and ISMRMRD raw data (mrisr.io.load reads both)
INPUT_EXTENSIONS = NIFTI_EXTENSIONS + (".h5", ".mrd")
BIDS_DATATYPES = ("anat", "func", "perf", "dwi", "fmap")


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


def parse_bids_name(name: str) -> tuple[list[tuple[str, str]], str, str] | None:
    """Split a BIDS file name into ordered entities, suffix and extension.

    ``"sub-01_task-rest_bold.nii.gz"`` -> ``([("sub", "01"), ("task", "rest")], "bold", ".nii.gz")``.
    Returns ``None`` when the name does not start with ``sub-<label>`` or is not key-value shaped.
    """
    extension = next((ext for ext in INPUT_EXTENSIONS if name.endswith(ext)), None)
    if extension is None:
        dot = name.find(".")
        extension = name[dot:] if dot >= 0 else ""
    stem = name[: len(name) - len(extension)] if extension else name
    parts = stem.split("_")
    if len(parts) < 2:
        return None
    entities = []
    for part in parts[:-1]:
        key, sep, value = part.partition("-")
        if not sep or not key.isalnum() or not LABEL_RE.match(value):
            return None
        entities.append((key, value))
    if not entities or entities[0][0] != "sub" or not parts[-1].isalnum():
        return None
    return entities, parts[-1], extension


def _is_candidate(path: Path, folder: Path) -> bool:
    relative = path.relative_to(folder)
    return (
        path.is_file()
        and path.name.endswith(INPUT_EXTENSIONS)
        and not any(part.startswith(".") for part in relative.parts)
    )


def _matches(relative: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(relative, pattern) for pattern in patterns)


def _pairing_key(relative: str) -> tuple | None:
    parsed = parse_bids_name(Path(relative).name)
    if parsed is None:
        return None
    entities, suffix, _ = parsed
    kept = tuple((k, v) for k, v in entities if k not in PAIRING_IGNORED)
    return (str(Path(relative).parent), kept, suffix)


def _bids_series(
    root: Path,
    subject: str,
    session: str | None,
    folder: Path,
    config: BatchConfig,
    problems: list[str],
) -> list[SeriesInputs]:
    rules = config.bids
    where = f"sub-{subject}" + (f"/ses-{session}" if session else "")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if _is_candidate(p, folder))
    usable = [f for f in files if not _matches(f, rules.exclude)]
    dynamics = [f for f in usable if _matches(f, rules.dynamic)]
    if not dynamics:
        return []
    planning_candidates: list[str] = []
    for pattern in rules.planning:
        planning_candidates = [f for f in usable if fnmatch.fnmatchcase(f, pattern) and f not in dynamics]
        if planning_candidates:
            break
    planning: Path | None = None
    if len(planning_candidates) > 1:
        problems.append(
            f"{root / where}: {len(planning_candidates)} planning scans match ({', '.join(planning_candidates)}); "
            "set bids.planning in the batch config to a pattern that picks one, e.g. 'anat/*_run-1_T1w.nii*'"
        )
    elif planning_candidates:
        planning = folder / planning_candidates[0]
    elif config.planning_required:
        problems.append(
            f"{root / where}: no planning scan matches {rules.planning}; add one (e.g. anat/sub-{subject}_T1w.nii.gz), "
            "adjust bids.planning in the batch config, or set planning_required: false to run without a prior"
        )
    truths: dict[tuple, list[str]] = {}
    for candidate in files:
        if rules.ground_truth and _matches(candidate, rules.ground_truth):
            truths.setdefault(_pairing_key(candidate), []).append(candidate)
    series = []
    for dynamic in dynamics:
        parsed = parse_bids_name(Path(dynamic).name)
        if parsed is None:
            problems.append(
                f"{folder / dynamic}: not a BIDS file name (sub-<label>[_key-value...]_<suffix>.nii.gz); rename it "
                "or list it in a manifest"
            )
            continue
        entities, suffix, _ = parsed
        if dict(entities).get("sub") != subject:
            problems.append(
                f"{folder / dynamic}: name says sub-{dict(entities).get('sub')} but it is in sub-{subject}/; move or rename it"
            )
            continue
        ground_truth = None
        key = _pairing_key(dynamic)
        matches = truths.get(key, []) if key is not None else []
        if len(matches) > 1:
            problems.append(
                f"{folder / dynamic}: {len(matches)} ground truths pair with it ({', '.join(matches)}); "
                "keep one or narrow bids.ground_truth in the batch config"
            )
        elif matches:
            ground_truth = folder / matches[0]
        parent = Path(dynamic).parent.name
        datatype = parent if parent in BIDS_DATATYPES else config.manifest.datatype
        series.append(
            SeriesInputs(
                subject=subject,
                session=session,
                dynamic=folder / dynamic,
                planning=planning,
                ground_truth=ground_truth,
                datatype=datatype,
                entities=tuple((k, v) for k, v in entities if k != "desc"),
                suffix=suffix,
            )
        )
    return series


def _discover_bids(root: Path, config: BatchConfig, labels: list[str] | None, problems: list[str]) -> Cohort:
    subject_dirs = sorted(d for d in root.glob("sub-*") if d.is_dir())
    available = [d.name[4:] for d in subject_dirs]
    name = root.name
    description = root / "dataset_description.json"
    if description.is_file():
        import json

        try:
            name = str(json.loads(description.read_text()).get("Name") or name)
        except (ValueError, AttributeError):
            problems.append(f"{description}: not valid JSON; fix the file (BIDS needs at least Name and BIDSVersion)")
    if not subject_dirs:
        problems.append(
            f"{root}: no sub-<label> folders; pass a BIDS dataset folder (with sub-01/, sub-02/, ...) "
            "or a .csv/.tsv manifest"
        )
    for bad in (d.name for d in subject_dirs if not LABEL_RE.match(d.name[4:])):
        problems.append(
            f"{root / bad}: '{bad[4:]}' is not a BIDS participant label (letters and digits only); rename the folder"
        )
    selected = _select(available, labels, f"{root}", problems)
    subjects: dict[str, SubjectInputs] = {}
    for label in selected:
        if not LABEL_RE.match(label):
            continue
        subject_dir = root / f"sub-{label}"
        sessions = sorted(d for d in subject_dir.glob("ses-*") if d.is_dir())
        units = [(d.name[4:], d) for d in sessions] or [(None, subject_dir)]
        found: list[SeriesInputs] = []
        for session, folder in units:
            found.extend(_bids_series(root, label, session, folder, config, problems))
        if not found:
            problems.append(
                f"{subject_dir}: no dynamic series matches {config.bids.dynamic}; add one (e.g. "
                f"func/sub-{label}_task-dynamic_bold.nii.gz) or adjust bids.dynamic in the batch config"
            )
        subjects[label] = SubjectInputs(label=label, series=found)
    return Cohort(source=root, kind="bids", root=root, subjects=subjects, name=name, config=config)


def _select(available: list[str], labels: list[str] | None, where: str, problems: list[str]) -> list[str]:
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


def _read_manifest(path: Path, problems: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read the manifest ({exc}); pass a UTF-8 .csv or .tsv file")
        return [], []
    reader = csv.reader(
        [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")], delimiter=delimiter
    )
    rows = list(reader)
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
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            problems.append(f"{path}: line {number} has {len(row)} fields, the header has {len(header)}; fix the row")
            continue
        records.append({"_line": str(number), **{column: value.strip() for column, value in zip(header, row)}})
    return header, records


def _discover_manifest(path: Path, config: BatchConfig, labels: list[str] | None, problems: list[str]) -> Cohort:
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
    selected = set(_select(available, labels, str(path), problems))
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


def normalise_session(session: str) -> str:
    session = str(session).strip()
    return session[4:] if session.startswith("ses-") else session


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
        cohort = _discover_bids(source.resolve(), config, participant_labels, collected)
    elif source.suffix.lower() in (".csv", ".tsv"):
        cohort = _discover_manifest(source.resolve(), config, participant_labels, collected)
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
