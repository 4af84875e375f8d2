"""Lever study for faithful SR: gate the prior's detail by the disagreement map, and other ways to
keep the network true to the measured frame. Not part of ``make bench`` (about 4 min per subject).

On a phantom with both needles (one entering, one only in the planning scan) and on one with a
planning scan of another contrast, 6.25 % of k-space, 6 frames, seed 11, it compares:

* ``keyhole`` (registered) and the network (default, tracked prior), as shipped;
* ``network + band replacement``: the network's output with its measured band replaced by the
  frame's (image-domain data consistency, ``sinc + net - band(net)``);
* ``gated prior``: ``sinc + w * (prior - band(prior))`` with ``w = 1`` where the disagreement map
  is below ``T``, falling linearly to 0 at ``2 T`` and spread (minimum filter) over one LR voxel:
  the prior's detail is kept only where the measured band agrees with it;
* ``network on gated prior``: the network given that gated prior instead of the tracked prior;
* ``network, gated``: ``sinc + w * (net - band(net))``.

Run: python benchmarks/fidelity_gating.py [--subjects real,mni152] [--thresholds 0.15,0.2]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import log, markdown_table, print_table, write_section  # noqa: E402
from fidelity import subjects  # noqa: E402


def run(static, thresholds: list[float], model, frames: int = 6) -> dict[str, dict[str, dict[str, float]]]:
    from scipy import ndimage

    from mrisr.kspace.band import measured_band
    from mrisr.metrics import contrast_recovery, leakage, object_mask, score_frame
    from mrisr.phantom import make_dynamic
    from mrisr.reconstruct import ReconstructOptions, prepare_state
    from mrisr.reconstruct.grid import frame_to_grid
    from mrisr.reconstruct.keyhole import keyhole
    from mrisr.reconstruct.maps import disagreement_map

    out: dict[str, dict[str, dict[str, float]]] = {}
    for scenario, kwargs in (("needles", {"insert": "needle", "planning_insert": "needle"}),
                             ("other contrast", {"planning_contrast": "swap"})):
        phantom = make_dynamic(static, frames=frames, keep=6.25, seed=11, **kwargs)
        rec = prepare_state(phantom.lr, phantom.planning, ReconstructOptions(method="keyhole-registered"), first_frame=phantom.lr.frame(0))
        scores: dict[str, list[dict[str, float]]] = {}
        for t in range(frames):
            frame = phantom.lr.frame(t)
            lr_xy = frame.shape[:2]
            truth = phantom.hr.frame(t)
            prior = rec.tracker.prior_for(frame)
            sinc = frame_to_grid(frame, truth.shape[:2])
            net = model.predict(sinc, prior)
            outputs = {"sinc": sinc, "registered keyhole": keyhole(frame, prior), "network (default)": net,
                       "network + band replacement": sinc + net - measured_band(net, lr_xy)}
            d = disagreement_map(prior, sinc, lr_xy)
            size = 2 * int(round(truth.shape[0] / lr_xy[0])) + 1
            prior_detail = prior - measured_band(prior, lr_xy)
            net_detail = net - measured_band(net, lr_xy)
            for threshold in thresholds:
                w = ndimage.minimum_filter(np.clip(2.0 - d / threshold, 0.0, 1.0), size=(size, size, 1))
                gated = np.maximum(sinc + w * prior_detail, 0)
                outputs[f"gated prior, T={threshold:g}"] = gated
                outputs[f"network on gated prior, T={threshold:g}"] = model.predict(sinc, gated)
                outputs[f"network, gated, T={threshold:g}"] = sinc + w * net_detail
            mask = object_mask(truth)
            for name, image in outputs.items():
                row = {"ssim_tissue": score_frame(image, truth, mask)["ssim_tissue"]}
                if phantom.insert_mask is not None and phantom.insert_mask[..., t].any():
                    row["recovery"] = contrast_recovery(image, truth, phantom.insert_mask[..., t])
                if phantom.planning_insert_mask is not None and phantom.planning_insert_mask[..., t].any():
                    row["leakage"] = leakage(image, phantom.planning_insert_mask[..., t], phantom.planning_insert_contrast)
                scores.setdefault(name, []).append(row)
        out[scenario] = {name: {key: float(np.mean([r[key] for r in rows if key in r])) for key in rows[0]}
                         for name, rows in scores.items()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", default="real,mni152")
    parser.add_argument("--thresholds", default="0.15,0.2")
    parser.add_argument("--model", required=True,
                        help="a prior-guided model that takes the prior itself (stage 2 of the default recipe); the "
                             "study feeds it raw and hand-gated priors, which a gated-keyhole model does not take")
    args = parser.parse_args()
    import torch

    from mrisr.models import load as load_model

    torch.set_num_threads(2)
    warnings.simplefilter("ignore")
    model = load_model(args.model)
    if model.prior_input != "prior":
        raise SystemExit(f"--model {args.model}: its prior input is {model.prior_input}; this lever study needs a model "
                         "that takes the prior itself (train stage 2: configs/default-recurrent.yaml)")
    thresholds = [float(v) for v in args.thresholds.split(",")]
    headers = ["subject", "method", "tissue SSIM (needles)", "needle recovery", "planning-needle leakage",
               "tissue SSIM (other contrast)"]
    rows = []
    for subject, static in subjects(args.subjects.split(",")).items():
        log(subject)
        result = run(static, thresholds, model)
        for name, needles in result["needles"].items():
            rows.append([subject, name, f"{needles['ssim_tissue']:.3f}", f"{needles['recovery']:.2f}",
                         f"{needles['leakage']:.2f}", f"{result['other contrast'][name]['ssim_tissue']:.3f}"])
    print_table(headers, rows)
    write_section("fidelity_gating", "Fidelity levers: gating the prior by the disagreement map",
                  markdown_table(headers, rows) + "\n\n6.25 % of k-space, 6 frames, seed 11; see the script's docstring "
                  "for each method.", command=f"python benchmarks/fidelity_gating.py --model {args.model}")


if __name__ == "__main__":
    main()
