"""Subject results: a row of ``summary.tsv`` each, from a run or from what is on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrisr.batch.cohort import Cohort
from mrisr.batch.derivatives import BATCH_KEY, read_json, series_outputs, status_path, subject_log_path, write_summary
from mrisr.batch.resume import SeriesPlan, recorded

__all__ = ["SubjectResult", "collect_summary", "result_from_blocks", "write_collected_summary"]


@dataclass
class SubjectResult:
    """How one subject went: a row of ``summary.tsv``."""

    subject: str
    status: str  # done | skipped | failed
    seconds: float | None = None
    frames: int | None = None
    ssim_tissue_mean: float | None = None
    psnr_tissue_mean: float | None = None
    ssim_whole_mean: float | None = None
    max_consistency_nrmse: float | None = None
    error: str = ""
    log: Path | None = None

    def row(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "status": self.status,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
            "frames": self.frames,
            "ssim_tissue_mean": self.ssim_tissue_mean,
            "psnr_tissue_mean": self.psnr_tissue_mean,
            "ssim_whole_mean": self.ssim_whole_mean,
            "max_consistency_nrmse": self.max_consistency_nrmse,
            "error": self.error,
        }


def result_from_blocks(label: str, status: str, blocks: list[dict], seconds: float | None = None) -> SubjectResult:
    from mrisr.metrics import SCORE_COLUMNS, summarise

    frames = sum(int(b.get("frames") or 0) for b in blocks)
    rows = [row for b in blocks for row in ((b.get("metrics") or {}).get("frames") or [])]
    rows = [row for row in rows if all(name in row for name in SCORE_COLUMNS)]  # older sidecars: whole volume only
    summary = summarise(rows, SCORE_COLUMNS) if rows else {}
    residuals = [(b.get("maps") or {}).get("max_consistency_nrmse") for b in blocks]
    residuals = [float(r) for r in residuals if r is not None]
    recorded_seconds = sum(float((b.get("timings") or {}).get("total_s") or 0.0) for b in blocks)
    return SubjectResult(
        subject=label,
        status=status,
        seconds=recorded_seconds if seconds is None else seconds,
        frames=frames,
        ssim_tissue_mean=summary.get("ssim_tissue_mean"),
        psnr_tissue_mean=summary.get("psnr_tissue_mean"),
        ssim_whole_mean=summary.get("ssim_whole_mean"),
        max_consistency_nrmse=max(residuals) if residuals else None,
    )


def collect_summary(cohort: Cohort, output_dir: str | Path, desc: str = "sr") -> list[SubjectResult]:
    """The state of every subject from what is on disk (for pipelines that run subjects as separate jobs).

    A subject is ``done`` when every series' sidecar holds a batch block and its output exists,
    ``failed`` otherwise (with the error of its last failed run, or "no result").
    """
    output_dir = Path(output_dir)
    results = []
    for subject in cohort.subjects.values():
        blocks = []
        for series in subject.series:
            outputs = series_outputs(output_dir, series, desc)  # the maps are not needed to count as done
            block = (read_json(outputs.sidecar) or {}).get(BATCH_KEY)
            if block and recorded(block, SeriesPlan(series, outputs, {}, {}, "")) is not None:
                blocks.append(block)
        if subject.series and len(blocks) == len(subject.series):
            results.append(result_from_blocks(subject.label, "done", blocks))
            continue
        status = read_json(status_path(output_dir, subject.label)) or {}
        error = status.get("error") or (
            f"no result: not run yet or interrupted; see {subject_log_path(output_dir, subject.label)}"
        )
        results.append(SubjectResult(subject.label, "failed", seconds=status.get("seconds"), error=error))
    return results


def write_collected_summary(cohort: Cohort, output_dir: str | Path, desc: str = "sr") -> Path:
    """Write ``summary.tsv`` from :func:`collect_summary`."""
    return write_summary(output_dir, [r.row() for r in collect_summary(cohort, output_dir, desc)])
