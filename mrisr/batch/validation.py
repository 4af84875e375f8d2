"""Batch validation: everything a run needs is checked before any work starts.

Every problem found (cohort, output folder, model, device, options, colliding outputs) is reported
at once in one :class:`~mrisr.batch.cohort.BatchValidationError`; a failed validation writes nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mrisr.batch.cohort import BatchValidationError, Cohort, SeriesInputs
from mrisr.batch.config import BatchConfig, load_batch_config
from mrisr.batch.derivatives import series_outputs, subject_log_path
from mrisr.batch.discovery import discover
from mrisr.io.errors import MrisrInputError, one_line

__all__ = ["RunSettings", "output_location_problem", "validate_batch"]


@dataclass(frozen=True)
class RunSettings:
    """What a batch run computes (``options``) and where (``device``, ``threads``).

    Attributes:
        options: :class:`~mrisr.batch.config.ReconstructSettings` as a dict (model, method,
            prior_mode, factor, matrix, data_consistency, finetune, finetune_minutes, maps).
        desc: ``desc-`` entity of the SR series.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: torch CPU threads per subject (``None``: torch's default; ``--jobs`` splits the cores).
        force: recompute subjects even when they are up to date.
    """

    options: dict[str, Any]
    desc: str = "sr"
    device: str = "auto"
    threads: int | None = None
    force: bool = False
    #: :class:`~mrisr.batch.config.DicomSettings` as a dict (series, prior_series, output_format)
    dicom: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from mrisr.io.errors import OptionError
        from mrisr.reconstruct.options import check_device

        check_device("RunSettings", self.device)
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise OptionError("RunSettings", "threads", self.threads, "must be a whole number >= 1, e.g. 4")

    @property
    def finetune(self) -> bool:
        return bool(self.options.get("finetune"))

    @property
    def maps(self) -> bool:
        return bool(self.options.get("maps"))



def _raw_bids_root(folder: Path) -> Path | None:
    """The raw BIDS dataset ``folder`` lies in (the nearest folder up with a ``dataset_description.json``
    that does not say ``DatasetType: derivative``), or ``None``."""
    from mrisr.io.configfile import load_json_file

    for candidate in (folder, *folder.parents):
        description = candidate / "dataset_description.json"
        if description.is_file():
            try:
                kind = load_json_file(description, "dataset description").get("DatasetType", "raw")
            except (MrisrInputError, AttributeError):
                kind = "raw"
            return candidate if str(kind).lower() != "derivative" else None
    return None


def output_location_problem(output_dir: str | Path, cohort: Cohort) -> str | None:
    """The one output-location rule of a batch run, the same for every input form (BIDS folder,
    manifest, the single files a manifest names): the output folder may not be, or lie inside, a raw
    BIDS dataset any input belongs to (its ``derivatives/`` folder excepted), nor be or contain the
    folder of an input file. ``None`` when the location is fine, else the problem.
    """
    out = Path(output_dir).expanduser().resolve()
    roots: dict[Path, None] = {}
    folders: dict[Path, None] = {}
    if cohort.kind == "bids" and cohort.root.is_dir():
        roots[cohort.root.resolve()] = None
    for subject in cohort.subjects.values():
        for series in subject.series:
            for file in series.files().values():
                folder = file.resolve().parent if not file.is_dir() else file.resolve()
                folders[folder] = None
                root = _raw_bids_root(folder)
                if root is not None:
                    roots[root] = None
    for root in roots:
        if out.is_relative_to(root) and not out.is_relative_to(root / "derivatives"):
            return (f"{output_dir}: lies in the raw BIDS dataset {root}; writing there would mix raw and derived "
                    f"files (or overwrite raw ones); use {root / 'derivatives' / 'mrisr'}")
    for folder in folders:
        if folder.is_relative_to(out):
            return (f"{output_dir}: holds the input folder {folder}; results go into a folder of their own, "
                    f"e.g. {out / 'derivatives' / 'mrisr' if folder == out else out.parent / 'mrisr-derivatives'}")
    return None


def _check_output_dir(output_dir: Path, cohort: Cohort, problems: list[str]) -> list[Path]:
    """Problems with the output folder; returns the folders it had to create (to undo on failure)."""
    out = output_dir.expanduser().resolve()
    if out.exists() and not out.is_dir():
        problems.append(
            f"{output_dir}: exists and is not a folder; OUTPUT_DIR is the derivatives folder, e.g. derivatives/mrisr"
        )
        return []
    problem = output_location_problem(output_dir, cohort)
    if problem is not None:
        problems.append(problem)
        return []
    missing = [folder for folder in (out, *out.parents) if not folder.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".mrisr-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        problems.append(
            f"{output_dir}: cannot create or write the output folder ({exc.strerror}); choose a writable location"
        )
    return missing


def _check_links(output_dir: Path, cohort: Cohort, desc: str, problems: list[str]) -> None:
    """Subject folders (or files) in the output folder that are symbolic links to somewhere else:
    the run would write, and clean temporary files, outside the output folder."""
    root = os.path.realpath(output_dir)
    reported: set[str] = set()
    for subject in cohort.subjects.values():
        targets = [subject_log_path(output_dir, subject.label)]
        for series in subject.series:
            outputs = series_outputs(output_dir, series, desc, finetune=True, maps=True)
            targets += [outputs.series, outputs.sidecar, outputs.finetuned_model, *outputs.map_paths().values()]
        for target in targets:
            real = os.path.realpath(target)
            if os.path.commonpath([root, real]) == root:
                continue
            # name the link itself: the first component on the way that resolves elsewhere
            link = next(
                (p for p in [*reversed(target.parents), target] if p.is_symlink() and p.is_relative_to(output_dir)),
                target,
            )
            if str(link) not in reported:
                reported.add(str(link))
                problems.append(
                    f"{link}: a symbolic link to {os.path.realpath(link)}, outside the output folder; results are "
                    "only written inside it: replace the link by a real folder or choose another output folder"
                )


def _remove_created(folders: list[Path]) -> None:
    """Remove the (still empty) folders validation created, deepest first: a failed validation writes nothing."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def _check_model(option: str, cohort: Cohort, problems: list[str]) -> None:
    """Every model the cohort needs exists, is an mrisr checkpoint and fits the presence of a prior."""
    from mrisr.models.checkpoint import read_metadata
    from mrisr.models.registry import resolve_model_path
    from mrisr.reconstruct import ReconstructOptions
    from mrisr.reconstruct.pipeline import choose_model_name

    needed: dict[str, list[SeriesInputs]] = {}
    for subject in cohort.subjects.values():
        for series in subject.series:
            name = choose_model_name(ReconstructOptions(model=option), series.planning is not None)
            needed.setdefault(name, []).append(series)
    if not needed:
        needed[option] = []
    for name, series_list in needed.items():
        try:
            meta = read_metadata(resolve_model_path(name))
        except MrisrInputError as exc:
            problems.append(f"--model {option}: {exc}" if not str(exc).startswith(option) else str(exc))
            continue
        without_prior = [s for s in series_list if s.planning is None]
        if meta.get("uses_prior", True) and without_prior:
            problems.append(
                f"--model {option}: model {name} needs a planning scan as prior but {len(without_prior)} series have "
                f"none (e.g. {without_prior[0].dynamic}); add planning scans or use --model default-noprior"
            )


def _check_device(device: str, problems: list[str]) -> None:
    from mrisr.reconstruct.options import check_device

    try:
        check_device("--device", device)
    except MrisrInputError:
        problems.append(f"--device {device}: unknown device; use auto, cpu, cuda or cuda:N")
        return
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            problems.append(f"--device {device}: no CUDA device is available here; use --device cpu or auto")


def validate_batch(
    source: str | Path,
    output_dir: str | Path,
    config: str | Path | BatchConfig | None = None,
    participant_labels: list[str] | None = None,
    model: str | None = None,
    finetune: bool | None = None,
    device: str = "auto",
    jobs: int = 1,
    force: bool = False,
    check_model: bool = True,
) -> tuple[Cohort, RunSettings]:
    """Check everything a batch run needs before any work starts.

    Args:
        source: BIDS folder or ``.csv``/``.tsv`` manifest.
        output_dir: the derivatives folder to write.
        config: path of a batch config (``configs/batch.yaml``), a :class:`BatchConfig`, or ``None`` (defaults).
        participant_labels: subjects to run (``None``: all).
        model: overrides ``reconstruct.model`` of the config (``default`` or a checkpoint path).
        finetune: overrides ``reconstruct.finetune``.
        device: ``auto``, ``cpu`` or ``cuda``.
        jobs: parallel subjects (>= 1).
        force: recompute up-to-date subjects too.
        check_model: also validate the model file (off when only a summary is wanted).

    Returns:
        The cohort and the run settings.

    Raises:
        BatchValidationError: every problem found, in one message.
        MrisrInputError: an unreadable or invalid config file.
    """
    cfg = config if isinstance(config, BatchConfig) else load_batch_config(config)
    overrides: dict[str, Any] = {}
    if model is not None:
        overrides["model"] = str(model)
    if finetune is not None:
        overrides["finetune"] = bool(finetune)
    if overrides:
        # through the schema, as the recipe's own keys were: an override the other options rule out
        # (fine-tuning a keyhole method, say) is refused here rather than per subject at run time
        from pydantic import ValidationError

        from mrisr.batch.config import ReconstructSettings
        from mrisr.io.errors import OptionError

        try:
            settings = ReconstructSettings(**{**cfg.reconstruct.model_dump(), **overrides})
        except ValidationError as exc:
            causes = [(err.get("ctx") or {}).get("error") for err in exc.errors()]
            rules = [f"{c.option} = {c.value!r}: {c.rule}" for c in causes if isinstance(c, OptionError)]
            flags = " and ".join(f"--{name}" for name in overrides)
            raise MrisrInputError(f"{flags}: " + ("; ".join(rules) or one_line(exc))) from None
        cfg = cfg.model_copy(update={"reconstruct": settings})
    problems: list[str] = []
    if jobs < 1:
        problems.append(f"--jobs {jobs}: must be >= 1, e.g. --jobs 2")
    cohort = discover(source, cfg, participant_labels, problems=problems)
    created = _check_output_dir(Path(output_dir), cohort, problems)
    options = cfg.reconstruct.model_dump(mode="json")
    if options["factor"] is not None and options["matrix"] is not None:
        problems.append("reconstruct.factor and reconstruct.matrix: give one of them, not both")
    if check_model:
        _check_model(options["model"], cohort, problems)
        _check_device(device, problems)
    for subject in cohort.subjects.values():
        for series in subject.series:
            if series.planning is None and options["finetune"]:
                problems.append(
                    f"{series.dynamic}: --finetune needs a planning scan; add one or run without --finetune"
                )
    _check_links(Path(output_dir), cohort, cfg.desc, problems)
    outputs: dict[Path, Path] = {}
    for subject in cohort.subjects.values():
        for series in subject.series:
            target = series_outputs(output_dir, series, cfg.desc).series
            if target in outputs:
                problems.append(
                    f"{series.dynamic} and {outputs[target]}: both would be written to {target}; "
                    "give them distinct BIDS entities (task, run, acq)"
                )
            outputs[target] = series.dynamic
    if problems:
        _remove_created(created)
        raise BatchValidationError(source, problems)
    settings = RunSettings(options=options, desc=cfg.desc, device=device, force=force, dicom=cfg.dicom.model_dump())
    return cohort, settings

