"""Convert a Siemens raw file (twix ``.dat``, VB or VD/VE) to ISMRMRD (MRD) for ``mrisr``.

Reads the file with twixtools (``pip install 'mrisr[twix]'``) and writes the last measurement's
image acquisitions, with the geometry the scanner recorded, the way ``siemens_to_ismrmrd``
(the reference converter) does:

* ``position`` = the slice's centre from each readout's mini-header (``SliceData.SlicePos``:
  Sag, Cor, Tra, which is the patient frame LPS);
* ``read_dir``, ``phase_dir``, ``slice_dir`` from the mini-header's quaternion: Siemens stores it
  as (W, X, Y, Z) and its rotation matrix has the columns phase, read, slice;
* encoded space: the readout as sampled (oversampling included, ``FOV * oversampling``), the
  phase-encode lines, partitions (3-D) or one slice of ``dThickness`` (2-D); recon space: the
  base resolution over the readout FOV. Encoding centres from the mini-headers.

Readouts flagged ``REFLECT`` (EPI) are marked ``ACQ_IS_REVERSE`` and the trajectory ``epi``, which
``mrisr`` refuses (EPI needs ramp-sampling and phase correction: reconstruct it elsewhere).
Noise, phase-correction and feedback readouts are left out.

``--protocol`` also writes the raw header's own slice geometry (``MeasYaps``: ``sSliceArray`` and
``sKSpace``, patient position) to a JSON file, verbatim, to check the converted geometry against.

Usage:
    python scripts/twix_to_mrd.py meas.dat meas.h5 [--protocol meas_protocol.json]
    mrisr reconstruct meas.h5 --prior planning.nii.gz

For production use at a site, siemens_to_ismrmrd (https://github.com/ismrmrd/siemens_to_ismrmrd)
covers more sequences; its output is read the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REVERSE_FLAG = 22  # ISMRMRD ACQ_IS_REVERSE
TIME_TICK_S = 2.5e-3


def siemens_directions(quaternion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``read_dir, phase_dir, slice_dir`` of a Siemens mini-header quaternion ``(W, X, Y, Z)``.

    The rotation matrix of the unit quaternion has the columns phase, read, slice (as in
    siemens_to_ismrmrd, which calls ``ismrmrd_quaternion_to_directions(quat, phase, read, slice)``).
    """
    w, x, y, z = (float(q) for q in quaternion)
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    return rotation[:, 1], rotation[:, 0], rotation[:, 2]


def protocol_geometry(measurement: dict) -> dict:
    """The raw header's slice geometry and k-space settings, as the protocol states them."""
    yaps = measurement["hdr"]["MeasYaps"]
    meas = measurement["hdr"]["Meas"]
    keys = ("lBaseResolution", "lPhaseEncodingLines", "lPartitions", "ucDimension", "dPhaseResolution")
    return {
        "sSliceArray": {"lSize": yaps["sSliceArray"].get("lSize"), "asSlice": list(yaps["sSliceArray"]["asSlice"])},
        "sKSpace": {key: yaps["sKSpace"].get(key) for key in keys},
        "flReadoutOSFactor": meas.get("flReadoutOSFactor"),
        "tPatientPosition": meas.get("tPatientPosition") or meas.get("sPatPosition"),
        "tSequenceFileName": yaps.get("tSequenceFileName"),
    }


def convert(source: str | Path, target: str | Path, protocol: str | Path | None = None) -> Path:
    """Write ``source`` (twix ``.dat``) as ISMRMRD ``target``; see the module docstring."""
    import ismrmrd
    import twixtools
    from ismrmrd.hdf5 import acquisition_header_dtype

    measurement = twixtools.read_twix(str(source), verbose=False)[-1]
    scans = [mdb for mdb in measurement["mdb"] if mdb.is_image_scan()]
    if not scans:
        raise SystemExit(f"{source}: no image readouts in the last measurement")
    yaps = measurement["hdr"]["MeasYaps"]
    kspace, slab = yaps["sKSpace"], yaps["sSliceArray"]["asSlice"][0]
    base = int(kspace["lBaseResolution"])
    samples = int(scans[0].data.shape[-1])
    oversampling = samples / base
    three_d = int(kspace.get("ucDimension", 2)) == 4
    lines = int(kspace["lPhaseEncodingLines"])
    partitions = int(kspace.get("lPartitions", 1)) if three_d else 1
    reverse = any(mdb.is_flag_set("REFLECT") for mdb in scans)
    enc_fov = (float(slab["dReadoutFOV"]) * oversampling, float(slab["dPhaseFOV"]), float(slab["dThickness"]))
    rec_fov = (float(slab["dReadoutFOV"]), float(slab["dPhaseFOV"]), float(slab["dThickness"]))
    centre_line, centre_partition = int(scans[0].mdh.CenterLin), int(scans[0].mdh.CenterPar)

    x = ismrmrd.xsd
    header = x.ismrmrdHeader(experimentalConditions=x.experimentalConditionsType(
        H1resonanceFrequency_Hz=int(measurement["hdr"]["Dicom"].get("lFrequency", 0) or 0)))
    header.encoding.append(x.encodingType(
        encodedSpace=x.encodingSpaceType(matrixSize=x.matrixSizeType(x=samples, y=lines, z=partitions),
                                         fieldOfView_mm=x.fieldOfViewMm(x=enc_fov[0], y=enc_fov[1], z=enc_fov[2])),
        reconSpace=x.encodingSpaceType(matrixSize=x.matrixSizeType(x=base, y=lines, z=partitions),
                                       fieldOfView_mm=x.fieldOfViewMm(x=rec_fov[0], y=rec_fov[1], z=rec_fov[2])),
        encodingLimits=x.encodingLimitsType(
            kspace_encoding_step_1=x.limitType(minimum=0, maximum=lines - 1, center=centre_line),
            kspace_encoding_step_2=x.limitType(minimum=0, maximum=partitions - 1, center=centre_partition)),
        trajectory=x.trajectoryType("epi" if reverse else "cartesian"),
    ))
    target = Path(target)
    target.unlink(missing_ok=True)  # the ismrmrd package appends to an existing file
    with ismrmrd.Dataset(str(target), "dataset", create_if_needed=True) as dataset:
        dataset.write_xml_header(x.ToXML(header).encode())
        for mdb in scans:
            head = np.zeros((), dtype=acquisition_header_dtype)
            data = np.asarray(mdb.data, dtype=np.complex64)
            head["version"] = 1
            head["number_of_samples"] = data.shape[-1]
            head["available_channels"] = head["active_channels"] = data.shape[0]
            head["center_sample"] = int(mdb.mdh.CenterCol)
            head["scan_counter"] = int(mdb.mdh.ScanCounter)
            head["acquisition_time_stamp"] = int(mdb.mdh.TimeStamp)
            slice_data = mdb.mdh.SliceData
            head["position"] = (slice_data.SlicePos.Sag, slice_data.SlicePos.Cor, slice_data.SlicePos.Tra)
            head["read_dir"], head["phase_dir"], head["slice_dir"] = siemens_directions(slice_data.Quaternion)
            idx = head["idx"]
            idx["kspace_encode_step_1"], idx["kspace_encode_step_2"] = mdb.cLin, mdb.cPar
            idx["slice"], idx["repetition"], idx["phase"] = mdb.cSlc, mdb.cRep, mdb.cPhs
            idx["average"], idx["contrast"], idx["set"], idx["segment"] = mdb.cAve, mdb.cEco, mdb.cSet, mdb.cSeg
            if mdb.is_flag_set("REFLECT"):
                head["flags"] = np.uint64(1 << (REVERSE_FLAG - 1))
            acquisition = ismrmrd.Acquisition(head=ismrmrd.AcquisitionHeader.from_buffer_copy(head.tobytes()))
            acquisition.data[:] = data
            dataset.append_acquisition(acquisition)
    if protocol is not None:
        Path(protocol).write_text(json.dumps(protocol_geometry(measurement), indent=1, default=str) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="Siemens twix .dat file")
    parser.add_argument("target", type=Path, help="ISMRMRD file to write (.h5 or .mrd)")
    parser.add_argument("--protocol", type=Path, default=None, help="also write the raw header's geometry (JSON)")
    args = parser.parse_args(argv)
    try:
        import ismrmrd  # noqa: F401
        import twixtools  # noqa: F401
    except ImportError:
        print("twix_to_mrd needs twixtools and ismrmrd: pip install 'mrisr[twix]'", file=sys.stderr)
        return 2
    written = convert(args.source, args.target, args.protocol)
    print(f"{written}: {args.source.name} as ISMRMRD")
    return 0


if __name__ == "__main__":
    sys.exit(main())
