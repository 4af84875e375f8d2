"""A DICOM series through MRD into `mrisr serve`: written by mrisr's DICOM writer, turned into an MRD
file of 2-D slices (ISMRMRD's layout, and python-ismrmrd-server's dicom2mrd.py layout with the
``geometry`` parameter), sent as a file on loopback, planning series then dynamic; the SR images
come back on the grid and with the pixels `mrisr reconstruct` gives for the same DICOM folders, also where
each image of the dynamic has its own RescaleSlope / RescaleIntercept (which dicom2mrd.py leaves in the
``DicomJson`` meta and does not apply)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

ismrmrd = pytest.importorskip("ismrmrd")
pytest.importorskip("pydicom")

from dicom_mrd_testdata import RESCALES, dicom_to_mrd, vary_rescale  # noqa: E402
from serve_testdata import running_server  # noqa: E402

from mrisr.cli import app  # noqa: E402
from mrisr.data import load_sample  # noqa: E402
from mrisr.io import Volume, load  # noqa: E402
from mrisr.io.dicom_write import DicomSeriesWriter  # noqa: E402
from mrisr.io.errors import MrisrInputError  # noqa: E402
from mrisr.io.mrd_images import rescale_of, stack_images, volume_to_images  # noqa: E402
from mrisr.models import make_tiny_checkpoint  # noqa: E402
from mrisr.phantom import make_dynamic  # noqa: E402
from mrisr.serve import PriorStore  # noqa: E402
from mrisr.serve.client import read_mrd_file, send_series  # noqa: E402

FRAMES = 3
#: a matrix that is not square, so a field of view read along the wrong axis would show
SHAPE = (48, 40, 6)
GEOMETRY = ("read_dir", "phase_dir", "slice_dir", "field_of_view", "slice", "phase", "repetition", "image_index")


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A phantom written by mrisr's DICOM writer (planning from NIfTI, then the dynamic in the same
    study, copied with a slope and intercept per image), its MRD files in both layouts, a tiny model
    and `mrisr reconstruct` on the DICOM folders."""
    folder = tmp_path_factory.mktemp("serve_dicom")
    sample = load_sample()
    affine = sample.affine.copy()
    affine[:3, 3] = sample.affine[:3, :3] @ np.array([40, 40, 10]) + sample.affine[:3, 3]
    crop = Volume(data=np.ascontiguousarray(sample.data[40:40 + SHAPE[0], 40:40 + SHAPE[1], 10:10 + SHAPE[2]]),
                  affine=affine, qform_code=1, sform_code=1)
    files = make_dynamic(crop, frames=FRAMES, keep=6.25, seed=3, tr=0.5).save(folder / "phantom")
    planning = load(files["planning"])
    with DicomSeriesWriter(folder / "dicom_planning", planning, planning.spatial_shape, None, uid_seed="planning",
                           description="planning") as writer:
        writer.write(planning.data)
    template = load(folder / "dicom_planning")
    lr = load(files["lr"])
    with DicomSeriesWriter(folder / "dicom_dynamic_written", template, lr.spatial_shape, lr.n_frames, affine=lr.affine,
                           tr=lr.tr, uid_seed="dynamic", description="dynamic") as writer:
        for t in range(lr.n_frames):
            writer.write(lr.frame(t))
    rescales = vary_rescale(folder / "dicom_dynamic_written", folder / "dicom_dynamic")
    model = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True, prior_input="gated-keyhole")
    result = CliRunner().invoke(app, ["reconstruct", str(folder / "dicom_dynamic"), "--prior",
                                      str(folder / "dicom_planning"), "--model", str(model), "-o",
                                      str(folder / "sr.nii.gz"), "--quiet", "--device", "cpu", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    case = {"folder": folder, "model": model, "reference": load(folder / "sr.nii.gz"), "lr": lr,
            "rescales": rescales}
    for layout in ("mrd", "dicom2mrd"):
        case[f"planning_{layout}"] = dicom_to_mrd(folder / "dicom_planning", folder / f"planning_{layout}.h5", layout)
        case[f"dynamic_{layout}"] = dicom_to_mrd(folder / "dicom_dynamic", folder / f"dynamic_{layout}.h5", layout)
    return case


@pytest.fixture(scope="module")
def server(case):
    with running_server({"model": str(case["model"]), "device": "cpu", "precision": "fp32"},
                        store=PriorStore(max_entries=2)) as running:
        yield running


def _send(server, path, config, parameters=None):
    xml, items = read_mrd_file(path)
    reply = send_series(*server.address, config, xml, items, parameters=parameters)
    assert reply.closed and not reply.errors and reply.error is None, reply.texts
    return items, reply


def _relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_dicom_series_as_mrd_file_matches_reconstruct_of_the_dicom_folders(server, case):
    _, planning = _send(server, case["planning_mrd"], "mrisr-planning")
    assert any(f"stored planning scan {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]}" in text for text in planning.texts)
    sent, reply = _send(server, case["dynamic_mrd"], "mrisr")
    assert any("with a planning scan" in text for text in reply.texts)
    assert len(reply.images) == len(sent) == FRAMES * SHAPE[2]
    for before, after in zip(sent, reply.images):
        for name in ("position", *GEOMETRY):
            assert np.array_equal(np.asarray(getattr(before, name)), np.asarray(getattr(after, name))), name
        assert tuple(after.matrix_size) == (SHAPE[0], SHAPE[1], 1)
    reference = case["reference"]
    for t in range(FRAMES):
        frame = stack_images(reply.images[t * SHAPE[2]:(t + 1) * SHAPE[2]])
        assert np.abs(frame.affine - reference.affine).max() < 1e-3
        assert _relative(frame.data, reference.data[..., t]) <= 1e-5, t


def test_the_dynamic_has_a_rescale_per_image(case):
    slopes = {slope for slope, _ in case["rescales"].values()}
    assert len(case["rescales"]) == FRAMES * SHAPE[2] and len(slopes) >= len(RESCALES)
    assert {intercept for _, intercept in case["rescales"].values()} == {intercept for _, intercept in RESCALES}
    _, items = read_mrd_file(case["dynamic_dicom2mrd"])
    # dicom2mrd sends the stored integers: read without the rescale, one frame flickers by the slopes' ratio
    raw, rescaled = stack_images(items[:SHAPE[2]], rescale=False), stack_images(items[:SHAPE[2]])
    ratios = rescaled.data.max(axis=(0, 1)) / raw.data.max(axis=(0, 1))
    assert ratios.max() / ratios.min() > 1.2
    assert rescaled.rescaled and not raw.rescaled


def test_dicom2mrd_layout_lines_up_with_the_geometry_parameter(server, case):
    parameters = {"geometry": "dicom2mrd"}
    _send(server, case["planning_dicom2mrd"], "mrisr-planning", parameters)
    sent, reply = _send(server, case["dynamic_dicom2mrd"], "mrisr", parameters)
    assert not any("dicom2mrd.py writes it" in text for text in reply.texts)
    assert sum("pixels rescaled by each image's RescaleSlope" in text for text in reply.texts) == 1
    # mrisr's DICOM of a NIfTI names no PatientPosition, so dicom2mrd.py's header has none either
    assert any("does not pass ISMRMRD's schema" in text and "patientPosition" in text for text in reply.texts)
    assert any("with a planning scan" in text for text in reply.texts)  # found by the frame of reference
    assert len(reply.images) == FRAMES * SHAPE[2]
    assert [int(image.phase) for image in reply.images] == [t for t in range(FRAMES) for _ in range(SHAPE[2])]
    for before, after in zip(sent, reply.images):
        for name in GEOMETRY:
            assert np.array_equal(np.asarray(getattr(before, name)), np.asarray(getattr(after, name))), name
    reference = case["reference"]
    for t in range(FRAMES):
        images = reply.images[t * SHAPE[2]:(t + 1) * SHAPE[2]]
        frame = stack_images(images, geometry="dicom2mrd")
        # read in dicom2mrd's layout, the result lies on the grid `mrisr reconstruct` writes
        assert np.abs(frame.affine - reference.affine).max() < 1e-3
        first_voxel = np.diag([-1.0, -1.0, 1.0]) @ reference.affine[:3, 3]
        assert np.abs(np.asarray(images[0].position) - first_voxel).max() < 1e-3
        # the slope and intercept of each image, kept in its DicomJson meta, are applied before reconstruction
        assert _relative(frame.data, reference.data[..., t]) <= 1e-4, t
    meta = ismrmrd.Meta.deserialize(reply.images[0].attribute_string)
    assert (meta["RescaleSlope"], meta["RescaleIntercept"]) == ("1", "0")  # mrd2dicom.py must not rescale again
    assert not frame.rescaled


def test_plain_rescale_meta_keys_are_applied_and_checked():
    data = np.arange(24, dtype=np.float32).reshape(4, 6, 1) + 1
    images = volume_to_images(data, np.eye(4))
    meta = ismrmrd.Meta()
    meta["RescaleSlope"], meta["RescaleIntercept"] = "0.5", "-3"
    images[0].attribute_string = meta.serialize()
    assert rescale_of(images[0].attribute_string) == (0.5, -3.0)
    stack = stack_images(images)
    assert np.array_equal(stack.data, data * np.float32(0.5) - np.float32(3)) and stack.rescaled
    meta["RescaleSlope"] = "0"
    images[0].attribute_string = meta.serialize()
    with pytest.raises(MrisrInputError, match="RescaleSlope 0 and RescaleIntercept -3"):
        stack_images(images)
    assert rescale_of("") is None and not stack_images(volume_to_images(data, np.eye(4))).rescaled


def test_dicom2mrd_layout_read_as_mrd_is_flagged_and_lies_half_a_field_of_view_off(server, case):
    _send(server, case["planning_dicom2mrd"], "mrisr-planning")
    sent, reply = _send(server, case["dynamic_dicom2mrd"], "mrisr")
    assert any('"geometry": "dicom2mrd"' in text for text in reply.texts), reply.texts
    frame = stack_images(reply.images[:SHAPE[2]])
    reference = case["reference"]
    offset = frame.affine[:3, 3] - reference.affine[:3, 3]
    assert np.linalg.norm(offset) > 20  # mm: the reason for the parameter


def test_the_geometry_parameter_is_checked(server, case):
    xml, items = read_mrd_file(case["dynamic_dicom2mrd"])
    reply = send_series(*server.address, "mrisr", xml, items[:1], parameters={"geometry": "corner"})
    assert reply.closed and any("geometry 'corner' is not one of mrd, dicom2mrd" in text for text in reply.errors)
