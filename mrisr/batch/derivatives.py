"""The BIDS derivatives dataset a batch run writes, and the provenance that makes it resumable.

Layout of ``OUTPUT_DIR``::

    dataset_description.json                  Name, BIDSVersion, DatasetType "derivative", Authors, GeneratedBy,
                                              SourceDatasets and DatasetLinks (relative: the pair can move)
    README.md                                 what the dataset holds (written once; edit it freely)
    .bidsignore                               summary.tsv, sub-*/log, fine-tuned models: not BIDS files
    summary.tsv                               one row per subject: status, seconds, frames, metrics, error
    sub-01/[ses-1/]func/
        sub-01_task-x_desc-sr_bold.nii.gz     SR series (X', Y', Z, T), geometry and TR from the library
        sub-01_task-x_desc-sr_bold.json       sidecar: sources + sha256, model + sha256, options, timings, metrics
        sub-01_task-x_desc-finetuned_model.safetensors   with --finetune
        sub-01_task-x_desc-disagreement_bold.nii.gz / _desc-unmeasured_bold.nii.gz (+ .json)
                                              with reconstruct.maps: where the frame disagrees with its
                                              prior, and the detail added outside the measured k-space
    sub-01/log/sub-01_mrisr.log               per-subject log (appended run after run)
    sub-01/log/sub-01_status.json             why the last run of the subject failed (removed on success)

Every file is written under a temporary name and renamed; the sidecar is written last and is
the completion marker: a series is finished exactly when its sidecar holds the batch
fingerprint (inputs, model and options) and the files it lists exist.

The dataset passes the official BIDS validator (``bids-validator-deno``) without errors.
Identical inputs and options give byte-identical images; in the sidecars only the wall-clock
fields (:data:`TIMING_KEYS`) differ from run to run.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrisr.batch.cohort import Cohort, SeriesInputs
from mrisr.io.errors import MrisrInputError
from mrisr.io.jsonio import write_json_atomic, write_text_atomic

__all__ = [
    "BATCH_KEY",
    "BIDS_VERSION",
    "SUMMARY_COLUMNS",
    "TIMING_KEYS",
    "SeriesOutputs",
    "bids_uri",
    "derivative_sidecar",
    "map_sidecar",
    "read_json",
    "read_summary",
    "series_outputs",
    "status_path",
    "subject_log_path",
    "write_dataset_description",
    "write_summary",
]

BIDS_VERSION = "1.10.0"
#: sidecars and status files larger than this are not read (a sidecar is a few kB)
MAX_SIDECAR_BYTES = 16 << 20
#: key of the batch provenance block inside each sidecar
BATCH_KEY = "MrisrBatch"
#: tissue (object mask) first; whole-volume SSIM is mostly background; the largest data-consistency
#: residual of the subject's frames comes with reconstruct.maps
SUMMARY_COLUMNS = ("subject", "status", "seconds", "frames", "ssim_tissue_mean", "psnr_tissue_mean", "ssim_whole_mean",
                   "max_consistency_nrmse", "error")
SUMMARY_NAME = "summary.tsv"
MISSING = "n/a"
#: name of the source dataset in BIDS URIs (``bids:raw:sub-01/func/...``), declared in ``DatasetLinks``
SOURCE_LINK = "raw"
#: files of ours that BIDS has no place for, hidden from the validator by ``.bidsignore``
# ("sub-*/log", not "sub-*/log/": the validator matches the folder path without the slash)
BIDSIGNORE = (SUMMARY_NAME, "sub-*/log", "*_model.safetensors", "*_dicom")
#: sidecar keys that hold wall-clock times, the only sidecar content that differs between identical runs:
#: ``frame_seconds``, ``frame_wall_seconds`` and ``total_seconds`` of the reconstruction record, ``timings`` of
#: the batch block
TIMING_KEYS = ("frame_seconds", "frame_wall_seconds", "total_seconds", f"{BATCH_KEY}.timings")


@dataclass(frozen=True)
class SeriesOutputs:
    """Where one series' results go.

    Attributes:
        series: the SR series (``.nii.gz``).
        sidecar: its JSON sidecar (written last: the completion marker).
        finetuned_model: the subject's fine-tuned checkpoint (only with fine-tuning).
        maps: ``{"disagreement": path, "unmeasured": path}`` (only with maps; each with a ``.json``
            sidecar beside it).
    """

    series: Path
    sidecar: Path
    finetuned_model: Path | None
    maps: tuple[tuple[str, Path], ...] = ()

    def map_paths(self) -> dict[str, Path]:
        return dict(self.maps)

    def map_sidecar(self, name: str) -> Path:
        path = self.map_paths()[name]
        return path.with_name(path.name[: -len(".nii.gz")] + ".json")


def _bids_name(entities: tuple[tuple[str, str], ...], desc: str, suffix: str, extension: str) -> str:
    parts = [f"{key}-{value}" for key, value in entities if key != "desc"] + [f"desc-{desc}"]
    return "_".join(parts) + f"_{suffix}{extension}"


def series_folder(output_dir: Path, series: SeriesInputs) -> Path:
    folder = Path(output_dir) / f"sub-{series.subject}"
    if series.session:
        folder = folder / f"ses-{series.session}"
    return folder / series.datatype


def series_outputs(
    output_dir: str | Path, series: SeriesInputs, desc: str = "sr", finetune: bool = False, maps: bool = False
) -> SeriesOutputs:
    """The derivative paths of a series: ``sub-XX/[ses-YY/]<datatype>/<entities>_desc-<desc>_<suffix>.nii.gz``
    (and ``desc-disagreement`` / ``desc-unmeasured`` beside it with ``maps``)."""
    from mrisr.reconstruct.maps import MAP_NAMES

    folder = series_folder(Path(output_dir), series)
    image = folder / _bids_name(series.entities, desc, series.suffix, ".nii.gz")
    sidecar = folder / _bids_name(series.entities, desc, series.suffix, ".json")
    model = folder / _bids_name(series.entities, "finetuned", "model", ".safetensors") if finetune else None
    map_paths = tuple((name, folder / _bids_name(series.entities, name, series.suffix, ".nii.gz"))
                      for name in MAP_NAMES) if maps else ()
    return SeriesOutputs(series=image, sidecar=sidecar, finetuned_model=model, maps=map_paths)


def subject_log_path(output_dir: str | Path, label: str) -> Path:
    return Path(output_dir) / f"sub-{label}" / "log" / f"sub-{label}_mrisr.log"


def status_path(output_dir: str | Path, label: str) -> Path:
    return Path(output_dir) / f"sub-{label}" / "log" / f"sub-{label}_status.json"


def read_json(path: str | Path) -> dict | None:
    """The JSON object in ``path``, or ``None`` if it is missing or unreadable."""
    from mrisr.io.configfile import load_json_file

    try:
        data = load_json_file(path, "JSON file", limit=MAX_SIDECAR_BYTES)
    except MrisrInputError:
        return None
    return data if isinstance(data, dict) else None


def bids_uri(path: Path, root: Path | None) -> str:
    """``bids:raw:<relative path>`` for a file inside the source dataset ``root``, else a ``file://`` URI.

    ``raw`` is declared in ``DatasetLinks`` of ``dataset_description.json``.
    """
    resolved = Path(path).resolve()
    if root is not None and resolved.is_relative_to(Path(root).resolve()):
        return f"bids:{SOURCE_LINK}:{resolved.relative_to(Path(root).resolve()).as_posix()}"
    return resolved.as_uri()


def relative_link(output_dir: str | Path, root: str | Path) -> str:
    """The source dataset ``root`` as a path relative to the derivatives folder (``../..`` for
    ``bids/derivatives/mrisr``), so moving both together keeps the link; a ``file://`` URI where
    no relative path exists (another drive)."""
    root = Path(root).resolve()
    try:
        return Path(os.path.relpath(root, Path(output_dir).resolve())).as_posix()
    except ValueError:
        return root.as_uri()


def _source_description(cohort: Cohort) -> dict:
    return (read_json(cohort.root / "dataset_description.json") or {}) if cohort.kind == "bids" else {}


def dataset_description(cohort: Cohort, output_dir: str | Path) -> dict:
    """``dataset_description.json`` of the derivatives dataset written to ``output_dir``.

    ``Authors`` are the batch config's ``authors``, else the source dataset's, else ``["mrisr"]``.
    The source dataset is linked relatively: ``SourceDatasets`` is ``bids:raw:`` and
    ``DatasetLinks.raw`` the path from ``output_dir`` to it.
    """
    import mrisr

    source = _source_description(cohort)
    authors = list(cohort.config.authors) or [str(a) for a in source.get("Authors") or []] or ["mrisr"]
    origin: dict[str, str] = {"URL": f"bids:{SOURCE_LINK}:"}
    if source.get("DatasetDOI"):
        origin["DOI"] = str(source["DatasetDOI"])
    return {
        "Name": f"mrisr super-resolution of {cohort.name}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "Authors": authors,
        "GeneratedBy": [
            {
                "Name": "mrisr",
                "Version": mrisr.__version__,
                "Description": "Prior-guided super-resolution of dynamic MRI, step-wise over frames",
            }
        ],
        "SourceDatasets": [origin],
        "DatasetLinks": {SOURCE_LINK: relative_link(output_dir, cohort.root)},
    }


def dataset_readme(cohort: Cohort) -> str:
    """``README.md`` of the derivatives dataset."""
    import mrisr

    return f"""# mrisr super-resolution of {cohort.name}

Super-resolved dynamic MRI series written by `mrisr batch` (mrisr {mrisr.__version__}): each dynamic
series of the source dataset (linked as `raw` in `dataset_description.json`) reconstructed on
the grid of the subject's planning scan, frame by frame, guided by that scan.

- `sub-<label>/[ses-<label>/]<datatype>/*_desc-sr_<suffix>.nii.gz`: the SR series (X, Y, Z, T);
  geometry and repetition time follow the source series, the in-plane grid the planning scan.
- `*_desc-sr_<suffix>.json`: sidecar: `Sources` (the dynamic series and the planning scan), the
  reconstruction record (grid, prior, model, options) and the `MrisrBatch` provenance block
  (input and model SHA-256s, options, metrics against a ground truth where one was given).
- `summary.tsv`: one row per subject (status, seconds, frames, mean SSIM/PSNR, error).
- `sub-<label>/log/`: per-subject logs.

`summary.tsv`, the logs and fine-tuned models (`*_model.safetensors`) are not BIDS files and are
listed in `.bidsignore`. Rerunning with identical inputs and options gives byte-identical images;
in the sidecars only the wall-clock timings differ.
"""


def _write_bidsignore(output_dir: Path) -> None:
    """Add our patterns to ``.bidsignore`` (lines already there, the user's included, are kept)."""
    path = output_dir / ".bidsignore"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    missing = [pattern for pattern in BIDSIGNORE if pattern not in lines]
    if missing:
        write_text_atomic(path, "\n".join([*lines, *missing]) + "\n")


def write_dataset_description(output_dir: str | Path, cohort: Cohort) -> Path:
    """Write (or refresh) ``dataset_description.json``, and ``README.md`` and ``.bidsignore`` where
    missing; unchanged content is not rewritten and a README that is there is never touched."""
    output_dir = Path(output_dir)
    path = output_dir / "dataset_description.json"
    wanted = dataset_description(cohort, output_dir)
    if read_json(path) != wanted:
        write_json_atomic(path, wanted)
    if not any((output_dir / name).exists() for name in ("README", "README.md", "README.txt", "README.rst")):
        write_text_atomic(output_dir / "README.md", dataset_readme(cohort))
    _write_bidsignore(output_dir)
    return path


def derivative_sidecar(library: dict, series: SeriesInputs, root: Path | None, block: dict) -> dict:
    """The BIDS sidecar of an SR series: ``Sources`` (the dynamic series and the planning scan:
    the ground truth only feeds the metrics), the keys BIDS requires of a derivative image, the
    library's reconstruction record ``library`` and the batch provenance ``block``."""
    sources = [bids_uri(path, root) for path in (series.dynamic, series.planning) if path is not None]
    return {
        "Description": "Super-resolved dynamic series (mrisr, step-wise prior-guided reconstruction)",
        "Sources": sources,
        "SkullStripped": False,
        "RepetitionTime": library.get("RepetitionTime"),
        **{k: v for k, v in library.items() if k not in ("Description", "Sources", "SkullStripped", "RepetitionTime")},
        BATCH_KEY: block,
    }


MAP_DESCRIPTIONS = {
    "disagreement": "Where each measured frame disagrees with the prior it was given, within the measured k-space "
                    "band (|band(prior) - sinc| over the local signal level; mrisr --maps)",
    "unmeasured": "Magnitude of the SR series' k-space outside the measured band: the detail the method added "
                  "rather than measured (mrisr --maps)",
}


def map_sidecar(name: str, sr_image: Path, repetition_time: float | None) -> dict:
    """The BIDS sidecar of a map: what it is and the SR series it describes (``Sources``, a
    ``bids::`` URI into this derivatives dataset, whose root holds the ``sub-*`` folder)."""
    parts = Path(sr_image).parts
    start = max(i for i, part in enumerate(parts) if part.startswith("sub-") and i < len(parts) - 1)
    relative = Path(*parts[start:]).as_posix()
    return {"Description": MAP_DESCRIPTIONS[name], "Sources": [f"bids::{relative}"], "SkullStripped": False,
            "RepetitionTime": repetition_time}


def _cell(value: Any) -> str:
    if value is None or value == "":
        return MISSING
    if isinstance(value, float):
        if math.isnan(value):
            return MISSING
        if math.isinf(value):
            return "inf"
        return f"{value:.6g}" if 0 < abs(value) < 1e-3 else f"{value:.4f}"
    return " ".join(str(value).split())  # one line, no tabs


def read_summary(path: str | Path) -> dict[str, dict[str, str]]:
    """Rows of an existing ``summary.tsv`` by subject (empty if missing or unreadable)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8")), delimiter="\t")
        return {row["subject"]: row for row in reader if row.get("subject")}
    except (OSError, ValueError, KeyError):
        return {}


def write_summary(output_dir: str | Path, rows: list[dict[str, Any]], merge: bool = True) -> Path:
    """Write ``summary.tsv`` (one row per subject, sorted), atomically.

    Args:
        output_dir: the derivatives folder.
        rows: dicts with the keys of :data:`SUMMARY_COLUMNS` (missing values become ``n/a``).
        merge: keep the rows of subjects not in ``rows`` from an existing ``summary.tsv``
            (a run over some participants does not forget the others).
    """
    path = Path(output_dir) / SUMMARY_NAME
    merged: dict[str, dict[str, Any]] = dict(read_summary(path)) if merge else {}
    for row in rows:
        merged[str(row["subject"])] = row
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for subject in sorted(merged):
        writer.writerow([_cell(merged[subject].get(column)) for column in SUMMARY_COLUMNS])
    return write_text_atomic(path, buffer.getvalue())
