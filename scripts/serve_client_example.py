"""Send a planning scan and a dynamic series (NIfTI) to `mrisr serve` as a scanner would, and save the SR series.

The example client of docs/serve.md: the planning scan goes as one connection (config
``mrisr-planning``), the dynamic as another (config ``mrisr``), both as 2-D slices per frame with
the same study UID in the XML header; the super-resolved slices come back as MRD images and are
written as a NIfTI series.

    mrisr serve --port 9002 &
    python scripts/serve_client_example.py planning.nii.gz dynamic_lr.nii.gz -o sr.nii.gz

``--pace`` sends one frame per that many seconds (as the scanner acquires them);
``--parameters '{"maps": true}'`` passes options.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def header_xml(study: str) -> str:
    import ismrmrd

    header = ismrmrd.xsd.ismrmrdHeader(
        experimentalConditions=ismrmrd.xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        studyInformation=ismrmrd.xsd.studyInformationType(studyInstanceUID=study))
    return ismrmrd.xsd.ToXML(header)


def main(argv: list[str] | None = None) -> int:
    from mrisr.io import load, save_like
    from mrisr.io.mrd_images import stack_images, volume_to_images
    from mrisr.serve.client import send_series

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("planning", help="planning scan (3-D NIfTI), or '-' to send none")
    parser.add_argument("dynamic", help="dynamic LR series (4-D NIfTI)")
    parser.add_argument("-o", "--output", help="write the SR series here (NIfTI)")
    parser.add_argument("-a", "--address", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=9002)
    parser.add_argument("--study", default="1.2.826.0.1.3680043.10.1", help="study instance UID of both series")
    parser.add_argument("--pace", type=float, default=None, help="seconds between frames")
    parser.add_argument("--parameters", help="JSON options for the dynamic, e.g. '{\"maps\": true}'")
    parser.add_argument("--timings", help="write per-frame send/receive times (JSON) here")
    args = parser.parse_args(argv)

    xml = header_xml(args.study)
    if args.planning != "-":
        planning = load(args.planning)
        reply = send_series(args.address, args.port, "mrisr-planning", xml, volume_to_images(planning.data, planning.affine))
        print("\n".join(reply.texts))
        if reply.errors or not reply.closed:
            return 1
    dynamic = load(args.dynamic)
    slices = dynamic.spatial_shape[2]
    items = [image for t in range(dynamic.n_frames)
             for image in volume_to_images(dynamic.frame(t), dynamic.affine, repetition=t, first_index=t * slices + 1)]
    sent_at: list[float] = []
    start = time.perf_counter()

    def frames():
        for t in range(dynamic.n_frames):
            if args.pace is not None:
                delay = start + t * args.pace - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            yield from items[t * slices:(t + 1) * slices]
            sent_at.append(time.perf_counter())

    reply = send_series(args.address, args.port, "mrisr", xml, frames(),
                        json.loads(args.parameters) if args.parameters else None)
    print("\n".join(reply.texts))
    series = reply.images[0].image_series_index if reply.images else None
    sr = [(image, at) for image, at in zip(reply.images, reply.received_at) if image.image_series_index == series]
    print(f"{len(reply.images)} image(s) received for {dynamic.n_frames} frame(s)")
    if args.timings:
        last = [sr[(t + 1) * slices - 1][1] for t in range(len(sr) // slices)]
        with open(args.timings, "w") as handle:
            json.dump({"sent": sent_at, "received": last}, handle)
    if args.output and sr:
        stacks = [stack_images([image for image, _ in sr[t * slices:(t + 1) * slices]]) for t in range(len(sr) // slices)]
        data = np.stack([s.data for s in stacks], axis=-1)
        save_like(args.output, data, dynamic, affine=stacks[0].affine)
        print(f"wrote {args.output}")
    return 1 if reply.errors or reply.error or not reply.closed else 0


if __name__ == "__main__":
    sys.exit(main())
