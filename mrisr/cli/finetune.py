"""`mrisr finetune`: adapt a model to one subject using its static planning scan."""

from __future__ import annotations

from pathlib import Path

import typer

from mrisr.cli.app import app
from mrisr.cli.common import fail, schema_option, user_errors
from mrisr.reconstruct.options import option_help


@app.command(short_help="Fine-tune a model on one subject's planning scan.")
def finetune(
    planning: Path = typer.Option(..., "--planning", help="Static HR planning scan of the subject (3-D)."),
    like: Path = typer.Option(None, "--like", help="The subject's dynamic series: its matrix and k-space fraction are used."),
    keep: float = typer.Option(None, "--keep", help="k-space percentage of the dynamic (instead of --like)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output checkpoint (.safetensors)."),
    model: str = schema_option("model", help=f"Base model: {option_help('model')}"),
    # the same budget, bounds and default as `mrisr reconstruct --finetune-minutes`
    minutes: float = schema_option("finetune_minutes", "--minutes"),
    steps: int = typer.Option(None, "--steps", help="Step budget (whichever ends first)."),
    lr: float = typer.Option(2e-5, "--lr", help="Learning rate (set after any optimiser state is restored)."),
    device: str = schema_option("device"),
    threads: int = schema_option("threads"),
    match_contrast: bool = schema_option(
        "match_contrast", "--match-contrast/--no-match-contrast",
        help=f"{option_help('match_contrast')} With --like, before tuning on the planning scan, as mrisr reconstruct "
        "does; recorded in the checkpoint."),
    denoise_prior: bool = schema_option(
        "denoise_prior", "--denoise-prior/--no-denoise-prior",
        help=f"{option_help('denoise_prior')} The tuning target is the filtered planning scan, as mrisr reconstruct "
        "--finetune tunes on it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
) -> None:
    """Fine-tune a model on one subject's planning scan (LR simulated like the dynamic)."""
    import numpy as np

    from mrisr.io import MrisrInputError, load
    from mrisr.io.geometry import coarsen_affine
    from mrisr.io.guard import check_target
    from mrisr.io.hashing import file_sha256
    from mrisr.io.stream import iter_frames
    from mrisr.io.volume import Volume
    from mrisr.kspace.functional import center_keep_shape
    from mrisr.limits import check_keep, check_lr, check_steps
    from mrisr.models.checkpoint import save_checkpoint
    from mrisr.reconstruct import ReconstructOptions, prepare_state
    from mrisr.workflow import NOT_IMPROVED, finetune_model

    if (like is None) == (keep is None):
        fail(f"{planning}: give exactly one of --like DYNAMIC.nii.gz or --keep PERCENT")
    if not str(output).endswith(".safetensors"):
        fail(f"{output}: the fine-tuned model must be a .safetensors file")
    with user_errors(flags={"finetune_minutes": "minutes"}):
        if keep is not None:
            check_keep(keep)
        # model, device, threads and the time budget are checked by the option schema, as in reconstruct
        opts = ReconstructOptions(model=model, device=device, threads=threads, match_contrast=match_contrast,
                                  denoise_prior=denoise_prior, finetune=True, finetune_minutes=minutes)
        check_steps(steps)
        check_lr(lr)
        plan = load(planning)
        if keep is not None:
            check_keep(keep, inplane=plan.spatial_shape[:2])
        if plan.is_4d:
            raise MrisrInputError(f"{planning}: the planning scan is 4-D; pass a static 3-D volume")
        if like is not None:
            dynamic = load(like, lazy=True)
        else:
            # the dynamic a scanner would write at this keep: the planning grid's central k-space
            lr_xy = center_keep_shape(plan.spatial_shape[:2], keep)
            lr_shape = (lr_xy[0], lr_xy[1], plan.spatial_shape[2])
            dynamic = Volume(data=np.zeros(lr_shape, np.float32), affine=coarsen_affine(plan.affine, plan.spatial_shape, lr_shape),
                             source=Path(f"<keep {keep}%>"))
        # frame 0 only, streamed: a long series is never read whole
        first = next(iter_frames(dynamic)) if like is not None else None
        if first is None:
            from mrisr.kspace.functional import center_crop_lowres

            first = center_crop_lowres(plan.frame(0), keep)
        rec = prepare_state(dynamic, plan, opts, first)
        # against the planning scan, the dynamic and the base model (all registered as inputs by now),
        # before any fine-tuning
        check_target(output)

        def show(step, seconds, info):
            if not quiet:
                typer.echo(f"step {step:5d}  {seconds:6.1f} s  held-out error {info['val_loss']:.5f} (best {info['best']:.5f})",
                           err=True)

        tuned, report = finetune_model(rec, opts.finetune_minutes, steps, lr, on_progress=show)
        if not report.improved:
            # no copy of the base weights is written or presented as a tuned model
            typer.echo(f"{output}: not written: {NOT_IMPROVED} ({report.summary()}; lr {lr:g})")
            return
        meta = dict(tuned.meta)
        meta.pop("sha256", None)
        meta.update({"base_model": model, "base_model_sha256": rec.model.meta.get("sha256"),
                     "planning_sha256": file_sha256(planning), "finetune": report.as_dict(timings=False),
                     "finetune_keep_percent": rec.grid.keep,
                     "planning_contrast": None if rec.prior.contrast is None else rec.prior.contrast.describe()})
        save_checkpoint(tuned.network, output, meta)
    typer.echo(
        f"{output}: fine-tuned {report.summary()}; lr {lr:g}, keep {rec.grid.keep:.2f}%"
    )
