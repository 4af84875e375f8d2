"""A running ``mrisr serve`` (in a thread, loopback, any free port) and MRD headers for the serve tests."""

from __future__ import annotations

import contextlib
import threading

from mrisr.serve import MrdServer, PriorStore, StreamLimits


def xml_header(study: str = "1.2.826.0.1.3680043.2", frame_of_reference: str | None = None,
               patient: str | None = None, slices: int | None = None) -> str:
    """An ISMRMRD XML header naming a study (and optionally a frame of reference, a patient, the slice count)."""
    import ismrmrd

    header = ismrmrd.xsd.ismrmrdHeader(
        experimentalConditions=ismrmrd.xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000))
    if study or frame_of_reference:
        header.studyInformation = ismrmrd.xsd.studyInformationType(studyInstanceUID=study)
    if frame_of_reference:
        header.measurementInformation = ismrmrd.xsd.measurementInformationType(
            frameOfReferenceUID=frame_of_reference, patientPosition=ismrmrd.xsd.patientPositionType("HFS"))
    if patient:
        header.subjectInformation = ismrmrd.xsd.subjectInformationType(patientID=patient)
    if slices:
        header.encoding.append(ismrmrd.xsd.encodingType(
            encodedSpace=ismrmrd.xsd.encodingSpaceType(matrixSize=ismrmrd.xsd.matrixSizeType(x=1, y=1, z=1),
                                                       fieldOfView_mm=ismrmrd.xsd.fieldOfViewMm(x=1, y=1, z=1)),
            reconSpace=ismrmrd.xsd.encodingSpaceType(matrixSize=ismrmrd.xsd.matrixSizeType(x=1, y=1, z=1),
                                                     fieldOfView_mm=ismrmrd.xsd.fieldOfViewMm(x=1, y=1, z=1)),
            encodingLimits=ismrmrd.xsd.encodingLimitsType(
                slice=ismrmrd.xsd.limitType(minimum=0, maximum=slices - 1, center=0)),
            trajectory=ismrmrd.xsd.trajectoryType("cartesian")))
    return ismrmrd.xsd.ToXML(header)


@contextlib.contextmanager
def running_server(defaults: dict | None = None, limits: StreamLimits | None = None, store: PriorStore | None = None):
    """A server on 127.0.0.1 (a free port) served by a thread; stopped and joined on exit."""
    server = MrdServer("127.0.0.1", 0, defaults, limits or StreamLimits(idle_seconds=20), store)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop()
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"
