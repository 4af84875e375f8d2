"""The XML header of a connection: the strict ISMRMRD parse, the lenient fallback for headers the schema
refuses (no ``patientPosition``, as dicom2mrd.py writes them) with the same fields mrisr uses, and
refusals of what is not an ISMRMRD header (not XML, another root, DTDs and entities, too long)."""

from __future__ import annotations

import re

import pytest

ismrmrd = pytest.importorskip("ismrmrd")

from mrisr.io.errors import MrisrInputError  # noqa: E402
from mrisr.serve.header import MAX_HEADER_CHARS, LenientHeader, parse_header  # noqa: E402
from mrisr.serve.session import _image_slice_limit  # noqa: E402
from mrisr.serve.store import prior_key  # noqa: E402


def _full_header() -> str:
    x = ismrmrd.xsd
    space = x.encodingSpaceType(matrixSize=x.matrixSizeType(x=96, y=80, z=1),
                                fieldOfView_mm=x.fieldOfViewMm(x=240.0, y=200.0, z=4.5))
    header = x.ismrmrdHeader(
        experimentalConditions=x.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        studyInformation=x.studyInformationType(studyInstanceUID="1.2.3.4"),
        subjectInformation=x.subjectInformationType(patientID="P-17"),
        measurementInformation=x.measurementInformationType(
            frameOfReferenceUID="1.2.3.5", protocolName="cine", measurementID="77",
            patientPosition=x.patientPositionType("HFS")))
    header.encoding.append(x.encodingType(
        encodedSpace=space, reconSpace=space, trajectory=x.trajectoryType("cartesian"),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_1=x.limitType(minimum=0, maximum=79, center=40),
            slice=x.limitType(minimum=0, maximum=11, center=0))))
    return x.ToXML(header)


def _without_patient_position(xml: str) -> str:
    stripped = re.sub(r"\s*<patientPosition>[^<]*</patientPosition>", "", xml)
    assert stripped != xml
    return stripped


def test_a_valid_header_is_parsed_strictly():
    header = parse_header(_full_header())
    assert isinstance(header, ismrmrd.xsd.ismrmrdHeader)
    assert parse_header(header) is header  # python-ismrmrd-server hands a parsed header


def test_a_header_without_patient_position_is_read_leniently_with_the_same_fields():
    strict = parse_header(_full_header())
    lenient = parse_header(_without_patient_position(_full_header()).encode("utf-8"))
    assert isinstance(lenient, LenientHeader)
    assert "patientPosition" in lenient.reason and "\n" not in lenient.reason
    assert prior_key(lenient) == prior_key(strict) == ("study", "1.2.3.4", "1.2.3.5")
    assert _image_slice_limit(lenient) == _image_slice_limit(strict) == 12
    assert lenient.measurementInformation.protocolName == "cine"
    assert lenient.measurementInformation.patientPosition is None
    assert lenient.subjectInformation.patientID == "P-17"
    ours, theirs = lenient.encoding[0], strict.encoding[0]
    for space in ("encodedSpace", "reconSpace"):
        for axis in "xyz":
            assert getattr(getattr(ours, space).matrixSize, axis) == getattr(getattr(theirs, space).matrixSize, axis)
            assert getattr(getattr(ours, space).fieldOfView_mm, axis) == \
                getattr(getattr(theirs, space).fieldOfView_mm, axis)
    limit = ours.encodingLimits.kspace_encoding_step_1
    assert (limit.minimum, limit.maximum, limit.center) == (0, 79, 40)
    assert getattr(ours.encodingLimits, "kspace_encoding_step_2", None) is None  # absent in the document
    assert ours.trajectory == "cartesian"


def test_a_header_with_only_the_patient_id_keys_by_patient():
    xml = ('<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
           "<subjectInformation><patientID>P-9</patientID></subjectInformation></ismrmrdHeader>")
    header = parse_header(xml)
    assert isinstance(header, LenientHeader) and prior_key(header) == ("subject", "P-9")
    assert _image_slice_limit(header) is None and header.encoding == []


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
                  "<ismrmrdHeader><subjectInformation><patientID>&lol2;</patientID></subjectInformation></ismrmrdHeader>")
EXTERNAL = ('<?xml version="1.0"?><!DOCTYPE h [<!ENTITY id SYSTEM "file:///etc/hostname">]>'
            "<ismrmrdHeader><subjectInformation><patientID>&id;</patientID></subjectInformation></ismrmrdHeader>")


@pytest.mark.parametrize(("xml", "why"), [
    ("not xml at all", "syntax error"),
    ("<garbage>not ismrmrd</garbage>", "root element is 'garbage'"),
    ("<ismrmrdHeader><unclosed></ismrmrdHeader>", "mismatched tag"),
    (BILLION_LAUGHS, "declares a DTD or entities"),
    (EXTERNAL, "declares a DTD or entities"),
    ("<ismrmrdHeader>" + " " * MAX_HEADER_CHARS + "</ismrmrdHeader>", f"over the {MAX_HEADER_CHARS}"),
], ids=["not XML", "another root", "damaged", "entity expansion", "external entity", "too long"])
def test_what_is_not_an_ismrmrd_header_is_still_refused(xml, why):
    with pytest.raises(MrisrInputError, match="the XML header is not an ISMRMRD header") as caught:
        parse_header(xml)
    assert why in str(caught.value) and "\n" not in str(caught.value)
