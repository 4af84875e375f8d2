"""BIDS inputs: file names (entities, suffix, extension) and discovery of a BIDS dataset's series.

Each ``sub-<label>/`` (and each ``ses-<label>/`` inside it) is searched for dynamic series (see
:mod:`mrisr.batch.config` for the matching rules); every dynamic series gets the planning scan of its
session and, if one matches, a ground truth paired by entities.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from mrisr.batch.cohort import LABEL_RE, Cohort, SeriesInputs, SubjectInputs, select_labels
from mrisr.batch.config import BatchConfig
from mrisr.io.errors import MrisrInputError

__all__ = ["BIDS_DATATYPES", "INPUT_EXTENSIONS", "NIFTI_EXTENSIONS", "discover_bids", "parse_bids_name"]

#: entities that tell a ground truth (or a derivative) apart from the series it belongs to
PAIRING_IGNORED = ("acq", "rec", "desc")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
#: file names a cohort folder is searched for: NIfTI and ISMRMRD raw data (mrisr.io.load reads both)
INPUT_EXTENSIONS = NIFTI_EXTENSIONS + (".h5", ".mrd")
BIDS_DATATYPES = ("anat", "func", "perf", "dwi", "fmap")


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


def discover_bids(root: Path, config: BatchConfig, labels: list[str] | None, problems: list[str]) -> Cohort:
    """The :class:`Cohort` of the BIDS dataset ``root`` (selected ``labels``, all when empty).

    Every problem found is appended to ``problems``; nothing is raised.
    """
    subject_dirs = sorted(d for d in root.glob("sub-*") if d.is_dir())
    available = [d.name[4:] for d in subject_dirs]
    name = root.name
    description = root / "dataset_description.json"
    if description.is_file():
        from mrisr.io.configfile import load_json_file

        try:
            name = str(load_json_file(description, "dataset description").get("Name") or name)[:200]
        except (MrisrInputError, AttributeError) as exc:
            reason = f" ({exc})" if isinstance(exc, MrisrInputError) else ""
            problems.append(f"{description}: not valid JSON{reason}; fix the file (BIDS needs at least Name and "
                            "BIDSVersion)")
    if not subject_dirs:
        problems.append(
            f"{root}: no sub-<label> folders; pass a BIDS dataset folder (with sub-01/, sub-02/, ...) "
            "or a .csv/.tsv manifest"
        )
    for bad in (d.name for d in subject_dirs if not LABEL_RE.match(d.name[4:])):
        problems.append(
            f"{root / bad}: '{bad[4:]}' is not a BIDS participant label (letters and digits only); rename the folder"
        )
    selected = select_labels(available, labels, f"{root}", problems)
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

