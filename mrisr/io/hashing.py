"""SHA-256 of an image as it is stored: one file, a header with its detached data, or a DICOM folder.

Provenance (sidecars, fingerprints, checkpoints) records these digests, so an image that changes
in any of its files gets a new one.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from mrisr.io.errors import MrisrInputError

__all__ = ["file_sha256", "image_files"]

#: text headers whose pixel data may live in other files, and the header field that names them
DETACHED_HEADER_FIELDS = {".mhd": re.compile(r"^\s*ElementDataFile\s*=\s*(.*?)\s*$", re.I),
                          ".nhdr": re.compile(r"^\s*data ?file\s*:\s*(.*?)\s*$", re.I)}
#: Analyze / NIfTI-pair: a binary header and its data file, same stem
PAIRED_SUFFIXES = {".hdr": ".img", ".img": ".hdr"}
#: a header larger than this is not read for a data file name
HEADER_LIMIT = 1 << 16


def _detached_data(header: Path) -> list[Path]:
    """The data files a MetaImage (``.mhd``) or detached NRRD (``.nhdr``) header names, in order.

    ``LOCAL`` (data in the header file) names none; ``LIST`` names the files on the lines after
    it; ``pattern first last step`` (``slice%03d.raw 1 20 1``) names the files it expands to.
    """
    pattern = DETACHED_HEADER_FIELDS[header.suffix.lower()]
    with open(header, "rb") as handle:
        lines = handle.read(HEADER_LIMIT).decode("latin-1").splitlines()
    for index, line in enumerate(lines):
        found = pattern.match(line)
        if found is None:
            continue
        value = found.group(1)
        words = value.split()
        if not words or words[0].upper() == "LOCAL":
            return []
        if words[0].upper() == "LIST":
            names = [name.strip() for name in lines[index + 1:] if name.strip()]
        elif "%" in words[0] and len(words) >= 3:
            start, stop = int(words[1]), int(words[2])
            step = int(words[3]) if len(words) > 3 else 1
            names = [words[0] % number for number in range(start, stop + (1 if step > 0 else -1), step)]
        else:
            names = [value]
        files = [name if Path(name).is_absolute() else header.parent / name for name in map(Path, names)]
        missing = [str(file) for file in files if not file.is_file()]
        if missing:
            raise MrisrInputError(
                f"{header}: its data file {', '.join(missing)} is missing; copy it next to the header "
                "(a MetaImage or NRRD header keeps its pixels in that file)"
            )
        return files
    return []


def _dicom_series_files(path: Path) -> list[Path] | None:
    """The files of the DICOM series a DICOM file belongs to (what :func:`mrisr.io.load` reads for
    it: the images of its SeriesInstanceUID in its folder), sorted; ``None`` for a file that is not
    DICOM, is alone in its series, or whose series cannot be read (its own bytes are then hashed)."""
    from mrisr.io.dicom_series import find_series, is_dicom_file

    if not (path.is_file() and is_dicom_file(path)):
        return None
    try:
        series = find_series(path)
    except MrisrInputError:
        return None
    files = sorted(series[0].files) if len(series) == 1 else []
    return files if len(files) > 1 else None


def image_files(path: str | Path) -> list[Path]:
    """The files whose bytes make up the image at ``path``, in the order they are hashed.

    A folder (DICOM series): every file in it, sorted by relative path. One file of a DICOM series
    of several files: the files of that series (those the reader reads for it), sorted. A ``.mhd``
    or ``.nhdr`` header: itself, then the data files it names. An Analyze or NIfTI-pair
    ``.hdr``/``.img``: the header, then the data file, when both exist. Anything else: ``path`` itself.

    Raises:
        MrisrInputError: a header whose data file is missing.
    """
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    series = _dicom_series_files(path)
    return series if series is not None else _file_parts(path)


def _file_parts(path: Path) -> list[Path]:
    """A file that is not a DICOM series: itself, or a header and its data files."""
    suffix = path.suffix.lower()
    if suffix in DETACHED_HEADER_FIELDS and path.is_file():
        return [path, *_detached_data(path)]
    if suffix in PAIRED_SUFFIXES:
        partner = path.with_suffix(PAIRED_SUFFIXES[suffix])
        if partner.is_file():
            return [path, partner] if suffix == ".hdr" else [partner, path]
    return [path]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of the image at ``path`` (see :func:`image_files` for what is read).

    A single file hashes to the digest of its bytes (``sha256sum``'s); a folder to the digest of
    its sorted files' relative names and contents, so renaming a slice changes it; one file of a
    DICOM series to the same over the files of its series (names relative to the file's folder), so
    any slice the reader reads for it counts; a header with detached data to the digest of the
    header's bytes followed by its data files'.

    Args:
        path: an image file, header or DICOM folder.
        chunk: bytes read at a time.

    Returns:
        64 hexadecimal digits.

    Raises:
        MrisrInputError: a header whose data file is missing.
        OSError: a file cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    # a folder, or the series of one DICOM file: the names count too, relative to the folder
    root: Path | None = path
    if path.is_dir():
        files = image_files(path)
    else:
        series = _dicom_series_files(path)
        files, root = (series, path.parent) if series is not None else (_file_parts(path), None)
    for file in files:
        if root is not None:
            digest.update(file.relative_to(root).as_posix().encode())
        with open(file, "rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()
