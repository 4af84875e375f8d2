"""The JSON sidecar of a file reconstruction: its path, its content, and how it is written.

The sidecar (``<output stem>.json`` beside the output) records what a user needs to reproduce and
judge a result: versions, input hashes, the exact options, the HR grid, how the planning scan was
matched and tracked, fine-tuning, map summaries, per-frame times and every warning. It is built by
:func:`build_sidecar` alone and written by :func:`mrisr.io.jsonio.write_json_atomic`.
"""

from __future__ import annotations

import platform
from pathlib import Path

from mrisr.io.hashing import file_sha256


def sidecar_path(output: Path) -> Path:
    """``scan_sr.nii.gz`` -> ``scan_sr.json``."""
    name = output.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return output.with_name(name[: -len(suffix)] + ".json")
    return output.with_suffix(".json")


def maps_paths(output: Path) -> dict[str, Path]:
    """``<output stem>_disagreement.nii.gz`` and ``<output stem>_unmeasured.nii.gz`` beside the output."""
    from mrisr.reconstruct.maps import MAP_NAMES

    stem = sidecar_path(output).stem
    return {name: output.with_name(f"{stem}_{name}.nii.gz") for name in MAP_NAMES}


def build_sidecar(job, *, model_hash: str, tuning, map_summaries: list[dict], frame_seconds: list[float],
                  frame_wall_seconds: list[float], total_seconds: float) -> dict:
    """The sidecar's content for a finished :class:`mrisr.reconstruct.run.FileJob`.

    Args:
        job: the job (inputs, state, collected warnings).
        model_hash: SHA-256 of the model used (the tuned checkpoint's when fine-tuned).
        tuning: the :class:`mrisr.reconstruct.run.Tuning` the caller made, or ``None``.
        map_summaries: per frame, :meth:`mrisr.reconstruct.maps.FrameMaps.summary` with its index.
        frame_seconds: per frame, the reconstruction's seconds.
        frame_wall_seconds: per frame, reading, reconstructing and writing.
        total_seconds: the whole streaming run.
    """
    import mrisr
    from mrisr.reconstruct.pipeline import choose_model_name

    state, options = job.state, job.state.options
    model, prior = state.model, state.prior
    tuned_path = None if tuning is None else tuning.path
    return {
        "GeneratedBy": {"Name": "mrisr", "Version": mrisr.__version__},
        "inputs": {"dynamic": str(job.dynamic_path.resolve()), "dynamic_sha256": file_sha256(job.dynamic_path),
                   "prior": str(job.prior_path.resolve()) if job.prior_path else None,
                   "prior_sha256": file_sha256(job.prior_path) if job.prior_path else None},
        "method": options.method,
        "model": None if model is None else {
            "name": choose_model_name(options, job.prior is not None), "sha256": model_hash,
            "finetuned": str(tuned_path) if tuned_path else None, "uses_prior": model.uses_prior,
            "compute_dtype": model.compute_dtype(options.precision)},
        "options": options.as_dict(),
        "grid": state.grid.as_dict(),
        "prior": None if prior is None else {"coverage": round(prior.coverage, 4),
                                             "intensity_factor": prior.intensity_factor,
                                             "correlation": round(prior.correlation, 4),
                                             "contrast": None if prior.contrast is None else prior.contrast.describe(),
                                             "denoise": None if state.prior_denoise is None
                                             else state.prior_denoise.describe(),
                                             "tracking": None if state.tracker is None else state.tracker.describe()},
        "finetune": None if tuning is None else tuning.report,
        "maps": None if not job.map_paths else {
            "files": {name: path.name for name, path in job.map_paths.items()},
            "per_frame": map_summaries,
            "max_consistency_nrmse": max((m["consistency_nrmse"] for m in map_summaries), default=None),
        },
        "RepetitionTime": job.dynamic.tr,
        "frames": job.dynamic.n_frames,
        "frame_seconds": frame_seconds,
        "frame_wall_seconds": [round(w, 4) for w in frame_wall_seconds],
        "total_seconds": round(total_seconds, 3),
        "warnings": job.warnings,
        "torch_threads": _threads(),
        "machine": platform.machine(),
    }


def _threads() -> int:
    import torch

    return torch.get_num_threads()


__all__ = ["build_sidecar", "maps_paths", "sidecar_path"]
