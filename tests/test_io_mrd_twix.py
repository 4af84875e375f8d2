"""A real Siemens raw file: twixtools' gre.dat, converted to ISMRMRD by scripts/twix_to_mrd.py.

The converted file ships (tests/data/twix, MIT licence): its geometry, as mrisr reads it from the
acquisitions' mini-header positions and quaternions, must match the raw header's protocol (slice
position and normal, fields of view, matrix). Where twixtools and the original example files are
at hand (``MRISR_TWIX_EXAMPLES`` = the ``example_data`` folder of the twixtools source
distribution), the conversion itself is rerun and compared, and epi.dat is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ismrmrd")

from mrisr.io import MrisrInputError, load, voxel_sizes  # noqa: E402

DATA = Path(__file__).parent / "data" / "twix"
REPO = Path(__file__).resolve().parents[1]
RAS = np.array([-1.0, -1.0, 1.0])


def _check_against_protocol(volume, protocol: dict) -> None:
    slab = protocol["sSliceArray"]["asSlice"][0]
    kspace = protocol["sKSpace"]
    position = np.array([slab["sPosition"].get(k, 0.0) for k in ("dSag", "dCor", "dTra")])  # patient frame, LPS
    normal = np.array([slab["sNormal"].get(k, 0.0) for k in ("dSag", "dCor", "dTra")])
    nx, ny = kspace["lBaseResolution"], kspace["lPhaseEncodingLines"]
    assert volume.spatial_shape == (nx, ny, 1)
    zooms = voxel_sizes(volume.affine)
    assert np.allclose(zooms, [slab["dReadoutFOV"] / nx, slab["dPhaseFOV"] / ny, slab["dThickness"]], atol=1e-4)
    # the slice centre (voxel N // 2 in-plane) is the protocol's slice position, RAS = LPS with x, y negated
    centre = volume.affine @ np.array([nx // 2, ny // 2, 0, 1.0])
    assert np.abs(centre[:3] - RAS * position).max() < 1e-3
    # the slice axis is the protocol's normal (up to its sign), the in-plane axes are orthogonal to it
    axes = volume.affine[:3, :3] / zooms
    assert abs(abs(axes[:, 2] @ (RAS * normal)) - 1) < 1e-5
    assert abs(axes[:, 0] @ axes[:, 2]) < 1e-5 and abs(axes[:, 1] @ axes[:, 2]) < 1e-5


def test_converted_gre_geometry_matches_the_raw_header():
    volume = load(DATA / "gre.h5")
    raw = volume.extra["raw"]
    assert raw["coils"] == 2 and raw["readout_samples"] == 320 and raw["readout_oversampling_removed"]
    _check_against_protocol(volume, json.loads((DATA / "gre_protocol.json").read_text()))
    # a phantom disc filling the field of view: signal in the middle, background noise in the four
    # corners (the oversampled readout's outer half is removed, nothing folds over)
    image = volume.data[..., 0]
    corners = [image[rows, cols].mean() for rows in (slice(0, 12), slice(-12, None))
               for cols in (slice(0, 12), slice(-12, None))]
    assert image[60:100, 60:100].mean() > 4 * max(corners)


EXAMPLES = os.environ.get("MRISR_TWIX_EXAMPLES")


@pytest.mark.skipif(not EXAMPLES, reason="set MRISR_TWIX_EXAMPLES to twixtools' example_data folder (sdist)")
def test_conversion_from_the_original_twix_files(tmp_path):
    twixtools = pytest.importorskip("twixtools")
    examples = Path(EXAMPLES)
    target, protocol = tmp_path / "gre.h5", tmp_path / "gre_protocol.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "twix_to_mrd.py"), str(examples / "gre.dat"), str(target),
                    "--protocol", str(protocol)], check=True, capture_output=True)
    converted, shipped = load(target), load(DATA / "gre.h5")
    assert np.array_equal(converted.data, shipped.data) and np.allclose(converted.affine, shipped.affine)
    # the protocol straight from twixtools, not from the script
    header = twixtools.read_twix(str(examples / "gre.dat"), verbose=False)[-1]["hdr"]["MeasYaps"]
    _check_against_protocol(converted, {"sSliceArray": header["sSliceArray"], "sKSpace": header["sKSpace"]})
    epi = tmp_path / "epi.h5"
    subprocess.run([sys.executable, str(REPO / "scripts" / "twix_to_mrd.py"), str(examples / "epi.dat"), str(epi)],
                   check=True, capture_output=True)
    with pytest.raises(MrisrInputError, match="non-Cartesian trajectory \\(epi\\)"):
        load(epi)
