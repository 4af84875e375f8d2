"""`mrisr batch`: super-resolve a cohort (BIDS dataset or CSV/TSV manifest) into BIDS derivatives."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mrisr.cli.app import app
from mrisr.cli.common import fail, user_errors

STATUS_STYLE = {"done": "green", "skipped": "cyan", "failed": "bold red"}


def _labels(option: list[str] | None, extra: list[str]) -> list[str] | None:
    """``--participant-label 01 02`` (BIDS-App style) arrives as one option value plus extra arguments."""
    if extra and not option:
        fail(
            f"unexpected argument(s) {' '.join(extra)}; usage: mrisr batch INPUT OUTPUT_DIR [--participant-label 01 02 ...]"
        )
    labels = [part for value in [*(option or []), *extra] for part in value.replace(",", " ").split()]
    return labels or None


class RichReporter:
    """Overall bar (subjects done / total, ETA), the current subject's frames, one line per finished subject."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=quiet or not self.console.is_terminal,
        )
        self.overall = None
        self.current = None

    def __enter__(self) -> RichReporter:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, total: int) -> None:
        self.overall = self.progress.add_task("subjects", total=total)
        self.current = self.progress.add_task("", total=None, visible=False)

    def subject_started(self, label: str, frames: int | None) -> None:
        self.progress.update(self.current, description=f"  sub-{label}", completed=0, total=frames, visible=True)

    def frame(self, label: str, index: int, total: int) -> None:
        self.progress.update(
            self.current, description=f"  sub-{label} frames", completed=index + 1, total=total, visible=True
        )

    def subject_finished(self, result) -> None:
        self.progress.advance(self.overall)
        self.progress.update(self.current, visible=False)
        if self.quiet and result.status != "failed":
            return
        parts = [f"sub-{result.subject}", f"[{STATUS_STYLE[result.status]}]{result.status:<7}[/]"]
        if result.status == "failed":
            parts.append(f"{result.error}" + (f" (log: {result.log})" if result.log else ""))
        else:
            if result.seconds is not None:
                parts.append(f"{result.seconds:6.1f} s" + (" (recorded)" if result.status == "skipped" else ""))
            if result.frames is not None:
                parts.append(f"{result.frames} frames")
            if result.ssim_tissue_mean is not None:
                parts.append(f"SSIM in tissue {result.ssim_tissue_mean:.4f} (whole {result.ssim_whole_mean:.4f})  "
                             f"PSNR in tissue {result.psnr_tissue_mean:.2f} dB")
        self.console.print("  ".join(parts), soft_wrap=True)


@app.command(context_settings={"allow_extra_args": True}, short_help="Super-resolve a cohort into BIDS derivatives.")
def batch(
    ctx: typer.Context,
    input: Path = typer.Argument(
        ..., help="BIDS dataset folder, or a .csv/.tsv manifest (subject, dynamic, planning[, ground_truth])."
    ),
    output_dir: Path = typer.Argument(..., help="Derivatives folder to write, e.g. bids/derivatives/mrisr."),
    participant_label: list[str] = typer.Option(
        None, "--participant-label", help="Subjects to process (01 or sub-01; several: --participant-label 01 02)."
    ),
    config: Path = typer.Option(
        None,
        "--config",
        help="Batch config (matching rules, options); default: built-in, as the packaged 'batch' recipe "
        "(mrisr config show batch > my_batch.yaml).",
    ),
    jobs: int = typer.Option(
        1, "--jobs", "-j", help="Subjects processed in parallel processes (torch threads are split)."
    ),
    finetune: bool = typer.Option(
        None,
        "--finetune/--no-finetune",
        help="Fine-tune the model on each subject's planning scan first (default: config).",
    ),
    model: str = typer.Option(None, "--model", help="default, a bundled name or a checkpoint PATH (default: config)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    force: bool = typer.Option(False, "--force", help="Recompute subjects that are already up to date."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bar and no per-subject lines (failures still shown)."
    ),
    summary_only: bool = typer.Option(False, "--summary-only", hidden=True, help="Only write summary.tsv from disk."),
    no_summary: bool = typer.Option(False, "--no-summary", hidden=True, help="Do not write summary.tsv."),
) -> None:
    """Super-resolve every subject of a cohort into a BIDS derivatives dataset.

    Resumable: a subject whose outputs exist and whose sidecar records the same input hashes, model and options is skipped; a changed input or option reruns it. A failing subject is logged and marked failed in summary.tsv while the others go on (exit code 1). Inputs are validated up front and every problem is reported at once (exit code 1; nothing is written). The output folder may not be, or lie inside, a raw BIDS dataset of the inputs (derivatives/ excepted), nor hold an input folder.
    """
    from mrisr.batch.derivatives import write_dataset_description
    from mrisr.batch.runner import run_batch, validate_batch, write_collected_summary

    labels = _labels(participant_label, list(ctx.args))
    with user_errors("subjects in progress were stopped and their partial files removed; finished subjects are kept, rerun to resume"):
        cohort, settings = validate_batch(
            input,
            output_dir,
            config=config,
            participant_labels=labels,
            model=model,
            finetune=finetune,
            device=device,
            jobs=jobs,
            force=force,
            check_model=not summary_only,
        )
        if summary_only:
            write_dataset_description(output_dir, cohort)
            path = write_collected_summary(cohort, output_dir, settings.desc)
            typer.echo(f"{path}: {len(cohort.subjects)} subject(s)")
            return
        with RichReporter(quiet) as reporter:
            results = run_batch(cohort, output_dir, settings, jobs=jobs, reporter=reporter, summary=not no_summary)
    counts = {status: sum(r.status == status for r in results) for status in ("done", "skipped", "failed")}
    summary = output_dir / "summary.tsv"
    typer.echo(
        f"{output_dir}: {counts['done']} done, {counts['skipped']} skipped (up to date), {counts['failed']} failed"
        + ("" if no_summary else f"; see {summary}")
    )
    if counts["failed"]:
        sys.stderr.flush()
        raise typer.Exit(1)
