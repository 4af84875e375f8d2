"""The ISMRMRD XML header of a connection: the strict parse, and a lenient fallback of the fields mrisr uses.

ismrmrd-python's schema-bound parse (``ismrmrd.xsd.CreateFromDocument``) refuses a header that
misses a field the schema requires, e.g. ``measurementInformation/patientPosition``, which
python-ismrmrd-server's ``dicom2mrd.py`` leaves out when the DICOM has no PatientPosition. The
server needs only a few fields, so when the strict parse fails :func:`parse_header` reads just
those with ElementTree (:class:`LenientHeader`): the study and frame-of-reference UIDs and the
patient ID (the planning store's key), the protocol name (how the series is named), and each
encoding's trajectory, matrix, field of view and limits (slices per frame; raw acquisitions).

The text is treated as untrusted: it is bounded (:data:`MAX_HEADER_CHARS`) and a document type
or entity declaration is refused before either parse (an ISMRMRD header has none, so no entity
is ever expanded or fetched); defusedxml does the lenient parse when it is installed, else
ElementTree. A document that is not XML, or whose root is not ``ismrmrdHeader``, is still refused.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from mrisr.io.errors import MrisrInputError

__all__ = ["MAX_HEADER_CHARS", "LenientHeader", "parse_header"]

#: the longest XML header the lenient parse reads (scanner headers are well under 1 MiB)
MAX_HEADER_CHARS = 4 << 20
#: a DTD or entity declaration, refused before the lenient parse
_DECLARATION = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_SPACE_FIELDS = {"matrixSize": int, "fieldOfView_mm": float}
_LIMIT_FIELDS = ("minimum", "maximum", "center")


class LenientHeader(SimpleNamespace):
    """The fields of an ISMRMRD header mrisr uses, read without the schema; attribute paths as in
    ``ismrmrd.xsd.ismrmrdHeader`` (``studyInformation.studyInstanceUID``,
    ``encoding[0].encodedSpace.matrixSize.x``, ``encoding[0].encodingLimits.slice.maximum``, ...);
    a field the document lacks is ``None``.

    Attributes:
        reason: why the strict parse refused the header (one line).
    """


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(element, name: str):
    if element is None:
        return None
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _text(element, name: str) -> str | None:
    child = _child(element, name)
    text = (child.text or "").strip() if child is not None else ""
    return text or None


def _number(element, name: str, kind):
    text = _text(element, name)
    if text is None:
        return None
    try:
        return kind(float(text)) if kind is int else kind(text)
    except (TypeError, ValueError, OverflowError):
        return None


def _section(element, names: tuple[str, ...]) -> SimpleNamespace | None:
    if element is None:
        return None
    return SimpleNamespace(**{name: _text(element, name) for name in names})


def _space(element) -> SimpleNamespace | None:
    if element is None:
        return None
    fields = {}
    for name, kind in _SPACE_FIELDS.items():
        sub = _child(element, name)
        fields[name] = None if sub is None else SimpleNamespace(**{axis: _number(sub, axis, kind) for axis in "xyz"})
    return SimpleNamespace(**fields)


def _limits(element) -> SimpleNamespace | None:
    if element is None:
        return None
    limits = {}
    for child in element:
        limits[_local(child.tag)] = SimpleNamespace(**{name: _number(child, name, int) for name in _LIMIT_FIELDS})
    return SimpleNamespace(**limits)


def _encoding(element) -> SimpleNamespace:
    limits = _limits(_child(element, "encodingLimits"))
    return SimpleNamespace(
        trajectory=_text(element, "trajectory"),
        encodedSpace=_space(_child(element, "encodedSpace")),
        reconSpace=_space(_child(element, "reconSpace")),
        encodingLimits=limits,
    )


def _check_text(text: str) -> None:
    """Refuse, before any parse, what no ISMRMRD header holds: raises ``ValueError`` naming why."""
    if len(text) > MAX_HEADER_CHARS:
        raise ValueError(f"{len(text)} characters, over the {MAX_HEADER_CHARS} an XML header may hold")
    if _DECLARATION.search(text):
        raise ValueError("it declares a DTD or entities, which an ISMRMRD header never does")


def _parse_tree(text: str):
    """The root element of ``text``; raises ``ValueError`` naming why it was not parsed."""
    _check_text(text)
    try:
        from defusedxml.ElementTree import fromstring
    except ImportError:  # ElementTree: the DTD check above already keeps entities out
        from xml.etree.ElementTree import fromstring
    try:
        return fromstring(text)
    except Exception as exc:  # noqa: BLE001 - ParseError, and defusedxml's refusals
        raise ValueError(str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__) from None


def lenient_header(text: str, reason: str) -> LenientHeader:
    """The fields mrisr uses from XML ``text`` whose root is ``ismrmrdHeader``.

    Raises:
        ValueError: text over :data:`MAX_HEADER_CHARS`, with a DTD or entity declaration, not XML,
            or of another root element.
    """
    root = _parse_tree(text)
    if _local(root.tag) != "ismrmrdHeader":
        raise ValueError(f"its root element is {_local(root.tag)!r}, not 'ismrmrdHeader'")
    return LenientHeader(
        reason=reason,
        studyInformation=_section(_child(root, "studyInformation"), ("studyInstanceUID",)),
        subjectInformation=_section(_child(root, "subjectInformation"), ("patientID",)),
        measurementInformation=_section(_child(root, "measurementInformation"),
                                        ("frameOfReferenceUID", "protocolName", "measurementID", "patientPosition")),
        encoding=[_encoding(child) for child in root if _local(child.tag) == "encoding"],
    )


def parse_header(metadata):
    """The parsed ISMRMRD header from XML text (or an already parsed one, returned as it is).

    Returns:
        ``ismrmrd.xsd.ismrmrdHeader``, or a :class:`LenientHeader` when the strict parse refused
        a document that is still an ISMRMRD header (see the module docstring).

    Raises:
        MrisrInputError: XML that is not an ISMRMRD header (not XML, another root, a DTD, too long).
    """
    if not isinstance(metadata, str | bytes):
        return metadata
    import ismrmrd

    text = metadata.decode("utf-8", "replace") if isinstance(metadata, bytes) else metadata
    try:
        _check_text(text)  # before the strict parse too, so neither parser sees a DTD
    except ValueError as exc:
        raise MrisrInputError(f"the XML header is not an ISMRMRD header ({exc}); send the header the scan wrote") from None
    try:
        return ismrmrd.xsd.CreateFromDocument(text)
    except Exception as exc:  # noqa: BLE001 - xsdata raises several kinds on damaged or incomplete XML
        first = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    try:
        return lenient_header(text, first)
    except ValueError as lenient:
        raise MrisrInputError(f"the XML header is not an ISMRMRD header ({first}; {lenient}); "
                              "send the header the scan wrote") from None
