"""The MRD v1 message stream (python-ismrmrd-server, FIRE), read and written with every size bounded.

A stream is a sequence of messages, each a little-endian ``uint16`` identifier followed by its body:

====  =====================  ==================================================================
  ID  message                body
====  =====================  ==================================================================
   1  config file            1024 bytes: a NUL-terminated UTF-8 name
   2  config text            ``uint32`` length, then that many bytes of NUL-terminated text
   3  XML header             ``uint32`` length, then the ISMRMRD XML header
   4  close                  nothing: all data has been sent
   5  text                   ``uint32`` length, then text (logging, or JSON parameters)
1008  acquisition            340-byte ``AcquisitionHeader``, trajectory (float32), samples (complex64)
1022  image                  198-byte ``ImageHeader``, ``uint64`` attribute length, attributes, pixels
1026  waveform               40-byte ``WaveformHeader``, samples (uint32)
====  =====================  ==================================================================

The payload types are the ``ismrmrd`` package's (``ismrmrd.Acquisition``, ``ismrmrd.Image``,
``ismrmrd.Waveform``); the framing is ours so that every length a peer sends is checked against
:class:`StreamLimits` *before* a buffer of that size is allocated. A message that breaks a bound,
ends early or carries an unknown identifier raises :class:`ProtocolError` with one line that says
what arrived.

:class:`MrdConnection` offers the methods python-ismrmrd-server's ``Connection`` offers to a
``process(connection, config, metadata)`` module (iteration over the incoming items,
``send_image``, ``send_logging``, ``send_text``, ``send_close``), so :func:`mrisr.serve.process`
runs on either.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
import threading
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MESSAGE_NAMES",
    "MRD_MESSAGE_CLOSE",
    "MRD_MESSAGE_CONFIG_FILE",
    "MRD_MESSAGE_CONFIG_TEXT",
    "MRD_MESSAGE_ISMRMRD_ACQUISITION",
    "MRD_MESSAGE_ISMRMRD_IMAGE",
    "MRD_MESSAGE_ISMRMRD_WAVEFORM",
    "MRD_MESSAGE_METADATA_XML_TEXT",
    "MRD_MESSAGE_TEXT",
    "MrdConnection",
    "ProtocolError",
    "StreamLimits",
]

MRD_MESSAGE_CONFIG_FILE = 1
MRD_MESSAGE_CONFIG_TEXT = 2
MRD_MESSAGE_METADATA_XML_TEXT = 3
MRD_MESSAGE_CLOSE = 4
MRD_MESSAGE_TEXT = 5
MRD_MESSAGE_ISMRMRD_ACQUISITION = 1008
MRD_MESSAGE_ISMRMRD_IMAGE = 1022
MRD_MESSAGE_ISMRMRD_WAVEFORM = 1026

MESSAGE_NAMES = {
    MRD_MESSAGE_CONFIG_FILE: "config file", MRD_MESSAGE_CONFIG_TEXT: "config text",
    MRD_MESSAGE_METADATA_XML_TEXT: "XML header", MRD_MESSAGE_CLOSE: "close", MRD_MESSAGE_TEXT: "text",
    MRD_MESSAGE_ISMRMRD_ACQUISITION: "acquisition", MRD_MESSAGE_ISMRMRD_IMAGE: "image",
    MRD_MESSAGE_ISMRMRD_WAVEFORM: "waveform",
}

_ID = struct.Struct("<H")
_LENGTH = struct.Struct("<I")
_ATTRIBUTE_LENGTH = struct.Struct("<Q")
CONFIG_FILE_BYTES = 1024
#: bytes per pixel of each ISMRMRD image data type (1 ushort ... 8 complex double)
_PIXEL_BYTES = {1: 2, 2: 2, 3: 4, 4: 4, 5: 4, 6: 8, 7: 8, 8: 16}
#: logging levels as python-ismrmrd-server's ``send_logging`` spells them (8 characters each)
LOG_LEVELS = {"DEBUG": "DEBUG   ", "INFO": "INFO    ", "WARNING": "WARNING ", "ERROR": "ERROR   ",
              "CRITICAL": "CRITICAL"}

log = logging.getLogger("mrisr.serve")
#: how often a blocked read wakes to check the idle bound and the server's shutdown
_POLL_SECONDS = 0.25


class ProtocolError(Exception):
    """A stream that breaks the MRD framing or a bound: the connection is closed, the server goes on."""


@dataclass(frozen=True)
class StreamLimits:
    """Upper bounds on what one message may make the reader allocate.

    Attributes:
        text_bytes: config text, XML header and text messages.
        message_bytes: the payload of one acquisition, image or waveform.
        matrix: largest image matrix along any axis, and largest readout.
        channels: largest coil count of an acquisition or image.
        idle_seconds: longest silence of a client mid-stream before it is dropped.
    """

    text_bytes: int = 4 << 20
    message_bytes: int = 512 << 20
    matrix: int = 4096
    channels: int = 256
    idle_seconds: float = 600.0


class MrdConnection:
    """One MRD stream over a connected socket, read and written message by message.

    Iterating yields the incoming ``ismrmrd.Acquisition``, ``ismrmrd.Image``, ``ismrmrd.Waveform``
    items and text messages (``str``) until the peer's close message; a stream that ends without
    one, or breaks the framing, raises :class:`ProtocolError`.

    Args:
        sock: a connected TCP socket.
        limits: bounds checked before each allocation.
        name: how the peer is named in messages (``host:port``).
        stopping: polled while waiting for data; true ends the read with :class:`ProtocolError`
            (the server's shutdown).
    """

    def __init__(self, sock: socket.socket, limits: StreamLimits | None = None, name: str = "peer",
                 stopping=None) -> None:
        self.socket = sock
        self.stopping = stopping or (lambda: False)
        self.limits = limits or StreamLimits()
        self.name = name
        self.is_exhausted = False
        self.sent_images = 0
        self.received = {"acquisitions": 0, "images": 0, "waveforms": 0}
        self._pending: list[tuple[int, object]] = []
        self._send_lock = threading.Lock()
        sock.settimeout(_POLL_SECONDS)

    # ----- reading --------------------------------------------------------------------------
    def _recv_into(self, view: memoryview, what: str) -> int:
        """One ``recv_into``, waking every :data:`_POLL_SECONDS` to honour ``stopping`` and the idle bound."""
        waited = 0.0
        while True:
            try:
                return self.socket.recv_into(view, min(len(view), 1 << 20))
            except TimeoutError:
                waited += _POLL_SECONDS
                if self.stopping():
                    raise ProtocolError(f"{self.name}: the server is stopping; connection closed while waiting for "
                                        f"{what}") from None
                if waited >= self.limits.idle_seconds:
                    raise ProtocolError(f"{self.name}: no data for {self.limits.idle_seconds:g} s while waiting for "
                                        f"{what}; closing the connection") from None
            except OSError as exc:
                raise ProtocolError(f"{self.name}: connection lost while reading {what} ({exc})") from None

    def _read_exactly(self, n: int, what: str, at_boundary: bool = False) -> bytes:
        """``n`` bytes; an end of stream before them raises (``at_boundary``: before any of them, ``b""``)."""
        if n == 0:
            return b""
        buffer = bytearray(n)
        view = memoryview(buffer)
        got = 0
        while got < n:
            count = self._recv_into(view[got:], what)
            if count == 0:
                if at_boundary and got == 0:
                    return b""
                raise ProtocolError(f"{self.name}: stream truncated: {what} ended after {got} of {n} bytes "
                                    "(the client disconnected mid-message)")
            got += count
        return bytes(buffer)

    def _read_length(self, what: str, bound: int) -> int:
        length = _LENGTH.unpack(self._read_exactly(_LENGTH.size, f"the length of {what}"))[0]
        if length > bound:
            raise ProtocolError(f"{self.name}: {what} of {length} bytes exceeds the {bound}-byte limit; refused")
        return length

    def _read_text(self, what: str) -> str:
        length = self._read_length(what, self.limits.text_bytes)
        raw = self._read_exactly(length, what)
        try:
            return raw.split(b"\x00", 1)[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(f"{self.name}: {what} is not UTF-8 text; refused") from None

    def read_message(self) -> tuple[int, object]:
        """The next message as ``(identifier, payload)``; a clean end of stream is ``(MRD_MESSAGE_CLOSE, None)``
        only when the peer sent a close message (an end of stream without one raises)."""
        if self._pending:
            return self._pending.pop()
        head = self._read_exactly(_ID.size, "the next message", at_boundary=True)
        if not head:
            raise ProtocolError(f"{self.name}: the client disconnected without a close message")
        identifier = _ID.unpack(head)[0]
        if identifier == MRD_MESSAGE_CLOSE:
            return identifier, None
        if identifier == MRD_MESSAGE_CONFIG_FILE:
            raw = self._read_exactly(CONFIG_FILE_BYTES, "the config file name")
            try:
                return identifier, raw.split(b"\x00", 1)[0].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(f"{self.name}: config file name is not UTF-8; refused") from None
        if identifier in (MRD_MESSAGE_CONFIG_TEXT, MRD_MESSAGE_METADATA_XML_TEXT, MRD_MESSAGE_TEXT):
            return identifier, self._read_text(MESSAGE_NAMES[identifier])
        if identifier == MRD_MESSAGE_ISMRMRD_ACQUISITION:
            return identifier, self._read_acquisition()
        if identifier == MRD_MESSAGE_ISMRMRD_IMAGE:
            return identifier, self._read_image()
        if identifier == MRD_MESSAGE_ISMRMRD_WAVEFORM:
            return identifier, self._read_waveform()
        raise ProtocolError(f"{self.name}: unknown message identifier {identifier} (expected one of "
                            f"{', '.join(str(i) for i in MESSAGE_NAMES)}); refused")

    def push_back(self, identifier: int, payload: object) -> None:
        """Return a message read ahead (e.g. the optional JSON parameters' place) to the stream."""
        self._pending.append((identifier, payload))

    def _bounded(self, n: int, what: str) -> int:
        if n > self.limits.message_bytes:
            raise ProtocolError(f"{self.name}: {what} of {n} bytes exceeds the {self.limits.message_bytes}-byte "
                                "message limit; refused")
        return n

    def _read_acquisition(self):
        import ismrmrd

        header = ismrmrd.AcquisitionHeader.from_buffer_copy(
            self._read_exactly(ctypes.sizeof(ismrmrd.AcquisitionHeader), "an acquisition header"))
        samples, channels, dims = int(header.number_of_samples), int(header.active_channels), int(header.trajectory_dimensions)
        if samples > self.limits.matrix * 8 or channels > self.limits.channels or dims > 3:
            raise ProtocolError(f"{self.name}: acquisition header claims {samples} samples x {channels} channels x "
                                f"{dims} trajectory dimensions, beyond the limits ({self.limits.matrix * 8} samples, "
                                f"{self.limits.channels} channels, 3 dimensions); refused")
        traj_bytes = self._bounded(samples * dims * 4, "an acquisition trajectory")
        data_bytes = self._bounded(samples * channels * 8, "an acquisition")
        traj = np.frombuffer(self._read_exactly(traj_bytes, "an acquisition trajectory"), dtype=np.float32)
        data = np.frombuffer(self._read_exactly(data_bytes, "acquisition samples"), dtype=np.complex64)
        acquisition = ismrmrd.Acquisition(head=header)
        if dims:
            acquisition.traj[:] = traj.reshape(samples, dims)
        acquisition.data[:] = data.reshape(channels, samples)
        self.received["acquisitions"] += 1
        return acquisition

    def _read_image(self):
        import ismrmrd

        head_bytes = self._read_exactly(ctypes.sizeof(ismrmrd.ImageHeader), "an image header")
        header = ismrmrd.ImageHeader.from_buffer_copy(head_bytes)
        matrix = [int(n) for n in header.matrix_size]
        channels, data_type = int(header.channels), int(header.data_type)
        if data_type not in _PIXEL_BYTES:
            raise ProtocolError(f"{self.name}: image data type {data_type} is not an ISMRMRD type (1-8); refused")
        if max(matrix) > self.limits.matrix or min(matrix) < 1 or not 1 <= channels <= self.limits.channels:
            raise ProtocolError(f"{self.name}: image header claims matrix {'x'.join(map(str, matrix))} with {channels} "
                                f"channels, outside 1..{self.limits.matrix} per axis and 1..{self.limits.channels} "
                                "channels; refused")
        attribute_length = _ATTRIBUTE_LENGTH.unpack(self._read_exactly(_ATTRIBUTE_LENGTH.size, "an image's attribute length"))[0]
        if attribute_length > self.limits.text_bytes:
            raise ProtocolError(f"{self.name}: image attributes of {attribute_length} bytes exceed the "
                                f"{self.limits.text_bytes}-byte limit; refused")
        n_bytes = self._bounded(int(np.prod(matrix, dtype=np.int64)) * channels * _PIXEL_BYTES[data_type], "an image")
        attributes = self._read_exactly(int(attribute_length), "image attributes")
        try:
            attribute_text = attributes.split(b"\x00", 1)[0].decode("utf-8")
            image = ismrmrd.Image(head_bytes, attribute_text)
        except Exception as exc:  # the attribute XML is parsed by the package; any damage is the peer's
            raise ProtocolError(f"{self.name}: image attributes cannot be parsed ({type(exc).__name__}); refused") from None
        pixels = self._read_exactly(n_bytes, "image pixels")
        image.data.ravel()[:] = np.frombuffer(pixels, dtype=image.data.dtype)
        self.received["images"] += 1
        return image

    def _read_waveform(self):
        import ismrmrd

        head_bytes = self._read_exactly(ctypes.sizeof(ismrmrd.WaveformHeader), "a waveform header")
        header = ismrmrd.WaveformHeader.from_buffer_copy(head_bytes)
        n_bytes = self._bounded(int(header.channels) * int(header.number_of_samples) * 4, "a waveform")
        data = np.frombuffer(self._read_exactly(n_bytes, "waveform samples"), dtype=np.uint32)
        waveform = ismrmrd.Waveform(head_bytes)
        waveform.data.ravel()[:] = data
        self.received["waveforms"] += 1
        return waveform

    def read_config(self) -> str | None:
        """The first message: a config name or config text (``None``: the peer closed at once)."""
        identifier, payload = self.read_message()
        if identifier == MRD_MESSAGE_CLOSE:
            self.is_exhausted = True
            return None
        if identifier not in (MRD_MESSAGE_CONFIG_FILE, MRD_MESSAGE_CONFIG_TEXT):
            raise ProtocolError(f"{self.name}: the stream must start with a config message (1 or 2), not "
                                f"{MESSAGE_NAMES.get(identifier, identifier)}; refused")
        return str(payload)

    def read_metadata(self) -> str | None:
        """The second message: the XML header (``None``: the peer closed before sending one)."""
        identifier, payload = self.read_message()
        if identifier == MRD_MESSAGE_CLOSE:
            self.is_exhausted = True
            return None
        if identifier != MRD_MESSAGE_METADATA_XML_TEXT:
            raise ProtocolError(f"{self.name}: the config must be followed by the XML header (message 3), not "
                                f"{MESSAGE_NAMES.get(identifier, identifier)}; refused")
        return str(payload)

    def __iter__(self):
        while not self.is_exhausted:
            identifier, payload = self.read_message()
            if identifier == MRD_MESSAGE_CLOSE:
                self.is_exhausted = True
                return
            if identifier in (MRD_MESSAGE_CONFIG_FILE, MRD_MESSAGE_CONFIG_TEXT, MRD_MESSAGE_METADATA_XML_TEXT):
                raise ProtocolError(f"{self.name}: a second {MESSAGE_NAMES[identifier]} message mid-stream; refused")
            yield payload

    # ----- writing --------------------------------------------------------------------------
    def _send(self, *parts: bytes) -> None:
        """Send all of ``parts``; a peer that reads nothing for the idle bound, or has gone, raises :class:`ProtocolError`."""
        with self._send_lock:
            for part in parts:
                view = memoryview(part).cast("B")
                sent, waited = 0, 0.0
                while sent < len(view):
                    try:
                        sent += self.socket.send(view[sent:sent + (1 << 20)])
                        waited = 0.0
                    except TimeoutError:
                        waited += _POLL_SECONDS
                        if waited >= self.limits.idle_seconds:
                            raise ProtocolError(f"{self.name}: the client read nothing for "
                                                f"{self.limits.idle_seconds:g} s; closing the connection") from None
                    except OSError as exc:
                        raise ProtocolError(f"{self.name}: connection lost while sending ({exc})") from None

    def send_config_file(self, name: str) -> None:
        encoded = name.encode("utf-8")
        if len(encoded) >= CONFIG_FILE_BYTES:
            raise ValueError(f"config name {name[:40]!r}... is longer than {CONFIG_FILE_BYTES - 1} bytes")
        self._send(_ID.pack(MRD_MESSAGE_CONFIG_FILE), encoded.ljust(CONFIG_FILE_BYTES, b"\x00"))

    def _send_text_message(self, identifier: int, text: str) -> None:
        encoded = text.encode("utf-8") + b"\x00"
        self._send(_ID.pack(identifier), _LENGTH.pack(len(encoded)), encoded)

    def send_config_text(self, text: str) -> None:
        self._send_text_message(MRD_MESSAGE_CONFIG_TEXT, text)

    def send_metadata(self, xml: str) -> None:
        self._send_text_message(MRD_MESSAGE_METADATA_XML_TEXT, xml)

    def send_text(self, text: str) -> None:
        self._send_text_message(MRD_MESSAGE_TEXT, text)

    def send_logging(self, level: str, contents: str) -> None:
        """A text message ``"<LEVEL>   <contents>"`` as python-ismrmrd-server formats it."""
        prefix = LOG_LEVELS.get(level.strip().upper(), level)
        self.send_text(f"{prefix} {contents}")

    def send_close(self) -> None:
        self._send(_ID.pack(MRD_MESSAGE_CLOSE))

    def send_acquisition(self, acquisition) -> None:
        self._send(_ID.pack(MRD_MESSAGE_ISMRMRD_ACQUISITION), bytes(acquisition.getHead()),
                   np.ascontiguousarray(acquisition.traj, dtype=np.float32).tobytes(),
                   np.ascontiguousarray(acquisition.data, dtype=np.complex64).tobytes())

    def send_image(self, images) -> None:
        """Send one ``ismrmrd.Image`` or a list of them (``None`` entries skipped)."""
        for image in images if isinstance(images, list | tuple) else [images]:
            if image is None:
                continue
            attributes = image.attribute_string
            attributes = attributes.encode("utf-8") if isinstance(attributes, str) else bytes(attributes)
            head = image.getHead()
            head.attribute_string_len = len(attributes)
            self._send(_ID.pack(MRD_MESSAGE_ISMRMRD_IMAGE), bytes(head), _ATTRIBUTE_LENGTH.pack(len(attributes)),
                       attributes, np.ascontiguousarray(image.data).tobytes())
            self.sent_images += 1

    def send_waveform(self, waveform) -> None:
        self._send(_ID.pack(MRD_MESSAGE_ISMRMRD_WAVEFORM), bytes(waveform.getHead()),
                   np.ascontiguousarray(waveform.data, dtype=np.uint32).tobytes())

    def shutdown_close(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the peer may have gone already
        self.socket.close()
