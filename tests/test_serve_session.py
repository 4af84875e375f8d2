"""`mrisr serve` driven by the example client on loopback: planning series then dynamic, 2-D slices,
3-D images and raw acquisitions in; SR images out with the input's geometry and the pixels
`mrisr reconstruct` writes for the same data."""

from __future__ import annotations

import re

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("ismrmrd")

import ismrmrd  # noqa: E402
from mrd_testdata import write_raw  # noqa: E402
from serve_testdata import running_server, xml_header  # noqa: E402

from mrisr.cli import app  # noqa: E402
from mrisr.data import load_sample  # noqa: E402
from mrisr.io import Volume, load  # noqa: E402
from mrisr.io.mrd_images import stack_images, volume_to_images  # noqa: E402
from mrisr.models import make_tiny_checkpoint  # noqa: E402
from mrisr.phantom import make_dynamic  # noqa: E402
from mrisr.serve import PriorStore  # noqa: E402
from mrisr.serve.client import send_series  # noqa: E402

FRAMES = 50
SLICES = 8
GEOMETRY = ("position", "read_dir", "phase_dir", "slice_dir", "field_of_view", "slice", "repetition", "image_index")


def _reconstruct(dynamic, prior, model, output, *extra):
    result = CliRunner().invoke(app, ["reconstruct", str(dynamic), *(["--prior", str(prior)] if prior else []),
                                      "--model", str(model), "-o", str(output), "--quiet", "--device", "cpu",
                                      "--precision", "fp32", *extra])
    assert result.exit_code == 0, result.output
    return load(output)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A 50-frame phantom of real anatomy (48 x 48 x 8, LR 12 x 12 at 6.25 %), its planning scan, tiny
    models, the same frames as raw acquisitions, and `mrisr reconstruct`'s results on them."""
    folder = tmp_path_factory.mktemp("serve")
    sample = load_sample()
    affine = sample.affine.copy()
    affine[:3, 3] = sample.affine[:3, :3] @ np.array([40, 40, 10]) + sample.affine[:3, 3]
    crop = Volume(data=np.ascontiguousarray(sample.data[40:88, 40:88, 10:10 + SLICES]), affine=affine,
                  qform_code=1, sform_code=1)
    files = make_dynamic(crop, frames=FRAMES, keep=6.25, seed=4, tr=0.5).save(folder / "phantom")
    files["tiny"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True, prior_input="gated-keyhole")
    files["tiny_noprior"] = make_tiny_checkpoint(folder / "tiny_noprior.safetensors", prior=False)
    hr = load(files["hr"])
    files["raw"] = write_raw(folder / "scan.h5", hr.data[..., :3], hr.affine, lines=12, readout=12, bulk=True)
    files["reference"] = _reconstruct(files["lr"], files["planning"], files["tiny"], folder / "sr.nii.gz")
    files["reference_raw"] = _reconstruct(files["raw"], files["planning"], files["tiny"], folder / "sr_raw.nii.gz")
    return files


@pytest.fixture(scope="module")
def server(case):
    with running_server({"model": str(case["tiny"]), "device": "cpu", "precision": "fp32"},
                        store=PriorStore(max_entries=2)) as running:
        yield running


def _send_planning(server, case, xml, slices=False):
    planning = load(case["planning"])
    reply = send_series(*server.address, "mrisr-planning", xml, volume_to_images(planning.data, planning.affine,
                                                                                  slices=slices))
    assert reply.closed and not reply.errors, reply.texts
    assert any("stored planning scan 48x48x8" in text for text in reply.texts)
    return reply


def _slices(volume, frames=None, series=3):
    items = []
    for t in range(volume.n_frames if frames is None else frames):
        items += volume_to_images(volume.frame(t), volume.affine, repetition=t, series_index=series,
                                  first_index=t * SLICES + 1)
    return items


def _relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_planning_then_dynamic_slices_keep_geometry_and_match_reconstruct(server, case):
    xml = xml_header(study="1.2.3.100", frame_of_reference="1.2.3.101")
    _send_planning(server, case, xml)
    lr = load(case["lr"])
    sent = _slices(lr)
    reply = send_series(*server.address, "mrisr", xml, sent)
    assert reply.closed and not reply.errors and reply.error is None, reply.texts
    assert len(reply.images) == FRAMES * SLICES
    assert any("with a planning scan" in text for text in reply.texts)
    for before, after in zip(sent, reply.images):
        for name in GEOMETRY:
            assert np.array_equal(np.asarray(getattr(before, name)), np.asarray(getattr(after, name))), name
        assert after.image_series_index == before.image_series_index + 100
        assert tuple(after.matrix_size) == (48, 48, 1)
        assert after.data_type == ismrmrd.DATATYPE_FLOAT
        meta = ismrmrd.Meta.deserialize(after.attribute_string)
        assert meta["Keep_image_geometry"] == "1"
        assert "MRISR" in meta["ImageProcessingHistory"]
    reference = case["reference"]
    for t in range(FRAMES):
        frame = stack_images(reply.images[t * SLICES:(t + 1) * SLICES])
        assert np.abs(frame.affine - reference.affine).max() < 1e-4
        assert _relative(frame.data, reference.data[..., t]) <= 1e-5, t


def test_3d_images_come_back_as_3d_images(server, case):
    xml = xml_header(study="1.2.3.200")
    _send_planning(server, case, xml, slices=True)
    lr = load(case["lr"])
    sent = [volume_to_images(lr.frame(t), lr.affine, slices=False, repetition=t, first_index=t + 1)[0] for t in range(3)]
    reply = send_series(*server.address, "mrisr", xml, sent)
    assert reply.closed and not reply.errors, reply.texts
    assert len(reply.images) == 3
    for t, image in enumerate(reply.images):
        assert tuple(image.matrix_size) == (48, 48, SLICES)
        assert np.array_equal(np.asarray(image.position), np.asarray(sent[t].position))
        assert _relative(stack_images([image]).data, case["reference"].data[..., t]) <= 1e-5


def test_raw_acquisitions_match_reconstruct_of_the_raw_file(server, case):
    xml_file, items = _raw_items(case)
    xml = xml_header(study="1.2.3.300")
    _send_planning(server, case, xml)
    reply = send_series(*server.address, "mrisr", _with_study(xml_file, "1.2.3.300"), items)
    assert reply.closed and not reply.errors, reply.texts
    assert len(reply.images) == 3 * SLICES
    reference = case["reference_raw"]
    for t in range(3):
        frame = stack_images(reply.images[t * SLICES:(t + 1) * SLICES])
        assert np.abs(frame.affine - reference.affine).max() < 1e-3
        assert _relative(frame.data, reference.data[..., t]) <= 1e-5
        assert {int(image.repetition) for image in reply.images[t * SLICES:(t + 1) * SLICES]} == {t}


def test_raw_acquisitions_with_a_header_the_schema_refuses_are_read_leniently(server, case):
    xml_file, items = _raw_items(case)
    xml = _with_study(xml_file, "1.2.3.301")
    # experimentalConditions is required by ISMRMRD's schema and not used by mrisr
    lenient = re.sub(r"\s*<experimentalConditions>.*?</experimentalConditions>", "", xml, flags=re.S)
    assert lenient != xml
    _send_planning(server, case, xml_header(study="1.2.3.301"))
    reply = send_series(*server.address, "mrisr", lenient, items)
    assert reply.closed and not reply.errors, reply.texts
    assert sum("does not pass ISMRMRD's schema" in text for text in reply.texts) == 1
    assert any("with a planning scan" in text for text in reply.texts)
    for t in range(3):
        frame = stack_images(reply.images[t * SLICES:(t + 1) * SLICES])
        assert _relative(frame.data, case["reference_raw"].data[..., t]) <= 1e-5


def _raw_items(case):
    from mrisr.serve.client import read_mrd_file

    return read_mrd_file(case["raw"])


def _with_study(xml: str, study: str) -> str:
    header = ismrmrd.xsd.CreateFromDocument(xml)
    header.studyInformation = ismrmrd.xsd.studyInformationType(studyInstanceUID=study)
    return ismrmrd.xsd.ToXML(header)


def test_without_a_planning_scan_it_runs_without_and_says_so(server, case, caplog):
    lr = load(case["lr"])
    with caplog.at_level("WARNING", logger="mrisr.serve"):
        reply = send_series(*server.address, "mrisr", xml_header(study="9.9.9"), _slices(lr, frames=2),
                            parameters={"model": str(case["tiny_noprior"])})
    assert reply.closed and not reply.errors, reply.texts
    assert len(reply.images) == 2 * SLICES
    assert any("no planning scan stored for study 9.9.9" in text for text in reply.texts)
    assert any("no planning scan stored" in record.getMessage() for record in caplog.records)
    reference = _reconstruct(case["lr"], None, case["tiny_noprior"], case["lr"].parent / "noprior.nii.gz")
    assert _relative(stack_images(reply.images[SLICES:2 * SLICES]).data, reference.data[..., 1]) <= 1e-5


def test_maps_return_as_extra_series_and_keyhole_matches(server, case):
    xml = xml_header(study="1.2.3.400")
    _send_planning(server, case, xml)
    lr = load(case["lr"])
    reply = send_series(*server.address, "mrisr", xml, _slices(lr, frames=2),
                        parameters={"method": "keyhole-gated", "maps": True})
    assert reply.closed and not reply.errors, reply.texts
    series = sorted({int(image.image_series_index) for image in reply.images})
    assert series == [103, 104, 105]
    comments = {int(i.image_series_index): ismrmrd.Meta.deserialize(i.attribute_string).get("ImageComments")
                for i in reply.images}
    assert comments[104] == "mrisr disagreement map" and comments[105] == "mrisr unmeasured map"
    reference = _reconstruct(case["lr"], case["planning"], case["tiny"], case["lr"].parent / "keyhole.nii.gz",
                             "--method", "keyhole-gated")
    sr = [image for image in reply.images if image.image_series_index == 103]
    assert _relative(stack_images(sr[SLICES:]).data, reference.data[..., 1]) <= 1e-5


def test_a_prior_path_in_the_parameters_overrides_the_store(server, case):
    lr = load(case["lr"])
    reply = send_series(*server.address, "mrisr", xml_header(study="7.7.7"), _slices(lr, frames=1),
                        parameters={"prior": str(case["planning"])})
    assert reply.closed and not reply.errors, reply.texts
    assert any("prior from the parameters" in text for text in reply.texts)
    assert _relative(stack_images(reply.images).data, case["reference"].data[..., 0]) <= 1e-5


def test_frames_grouped_by_phase_when_only_phase_varies(server, case):
    """python-ismrmrd-server's dicom2mrd.py numbers a DICOM dynamic by the phase counter."""
    xml = xml_header(study="1.2.3.500")
    _send_planning(server, case, xml)
    lr = load(case["lr"])
    items = []
    for t in range(3):
        items += volume_to_images(lr.frame(t), lr.affine, phase=t, first_index=t * SLICES + 1)
    reply = send_series(*server.address, "mrisr", xml, items)
    assert reply.closed and not reply.errors, reply.texts
    assert [int(image.phase) for image in reply.images] == [t for t in range(3) for _ in range(SLICES)]
    assert _relative(stack_images(reply.images[2 * SLICES:]).data, case["reference"].data[..., 2]) <= 1e-5


def test_prior_store_is_bounded_least_recently_used():
    store = PriorStore(max_entries=2, max_bytes=3 * 8 * 4)
    volume = Volume(data=np.ones((2, 2, 2), dtype=np.float32), affine=np.eye(4))
    assert store.put(("study", "a", ""), volume) == []
    store.put(("study", "b", ""), volume)
    assert store.get(("study", "a", "")) is volume  # a is now the most recently used
    assert store.put(("study", "c", ""), volume) == [("study", "b", "")]
    assert store.keys() == [("study", "a", ""), ("study", "c", "")]
    with pytest.raises(ValueError, match="exceeds the store's"):
        store.put(("study", "d", ""), Volume(data=np.ones((4, 4, 4), dtype=np.float32), affine=np.eye(4)))


def test_prior_key_prefers_study_and_frame_of_reference_then_patient():
    from mrisr.serve.store import prior_key

    parse = ismrmrd.xsd.CreateFromDocument
    assert prior_key(parse(xml_header(study="1.2", frame_of_reference="3.4"))) == ("study", "1.2", "3.4")
    assert prior_key(parse(xml_header(study=None, patient="P01"))) == ("subject", "P01")
    assert prior_key(parse(xml_header(study=None))) is None
