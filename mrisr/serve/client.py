"""An example MRD client: send a series to an MRD server (``mrisr serve``) and collect what comes back.

What a scanner-side client does, in a few lines: connect, send the config name (planning series:
``mrisr-planning``, dynamic: ``mrisr``), the XML header, optionally JSON parameters, the images or
acquisitions, and a close message; meanwhile read the server's images and text messages until its
close. The tests drive ``mrisr serve`` with this client; ``scripts/serve_client_example.py``
shows it on NIfTI files, and ``python -m mrisr.serve.client FILE.h5 -c mrisr`` sends an MRD file.

Example:
    >>> from mrisr.serve.client import send_series              # doctest: +SKIP
    >>> reply = send_series("127.0.0.1", 9002, "mrisr", xml, images)  # doctest: +SKIP
    >>> reply.images[0].matrix_size                              # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mrisr.serve.protocol import (
    MRD_MESSAGE_CLOSE,
    MRD_MESSAGE_ISMRMRD_IMAGE,
    MRD_MESSAGE_TEXT,
    MrdConnection,
    ProtocolError,
    StreamLimits,
)

__all__ = ["Reply", "read_mrd_file", "send_series"]


@dataclass
class Reply:
    """What the server sent back.

    Attributes:
        images: the ``ismrmrd.Image`` messages, in order.
        texts: the text (logging) messages.
        closed: whether the server ended with a close message.
        error: why reading the reply stopped early, or ``None``.
        received_at: ``time.perf_counter()`` when each image arrived.
    """

    images: list = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    closed: bool = False
    error: str | None = None
    received_at: list[float] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """The server's ERROR logging messages."""
        return [text for text in self.texts if text.startswith("ERROR")]


def _receive(connection: MrdConnection, reply: Reply) -> None:
    try:
        while True:
            identifier, payload = connection.read_message()
            if identifier == MRD_MESSAGE_CLOSE:
                reply.closed = True
                return
            if identifier == MRD_MESSAGE_ISMRMRD_IMAGE:
                reply.images.append(payload)
                reply.received_at.append(time.perf_counter())
            elif identifier == MRD_MESSAGE_TEXT:
                reply.texts.append(str(payload))
    except ProtocolError as exc:
        reply.error = str(exc)


def send_series(host: str, port: int, config: str, xml: str, items: Iterable, parameters: dict | None = None,
                pace: float | None = None, frame_of=None, timeout: float = 600.0) -> Reply:
    """Send one series and return the server's reply.

    Args:
        host, port: the server.
        config: the config name (``mrisr`` or ``mrisr-planning``).
        xml: the ISMRMRD XML header.
        items: ``ismrmrd.Image`` and/or ``ismrmrd.Acquisition`` objects, in order.
        parameters: JSON parameters sent as a text message after the header (e.g.
            ``{"method": "keyhole-gated", "maps": true}``).
        pace: seconds between frames (as a scanner acquires them); ``None``: as fast as possible.
        frame_of: with ``pace``, a function giving an item's frame number (default: its repetition).
        timeout: seconds to wait for the server's reply after sending.
    """
    import ismrmrd

    sock = socket.create_connection((host, port), timeout=10)
    connection = MrdConnection(sock, StreamLimits(idle_seconds=timeout), name=f"server {host}:{port}")
    reply = Reply()
    reader = threading.Thread(target=_receive, args=(connection, reply), daemon=True)
    reader.start()
    frame_of = frame_of or (lambda item: item.idx.repetition if hasattr(item, "idx") else item.repetition)
    try:
        connection.send_config_file(config)
        connection.send_metadata(xml)
        if parameters:
            connection.send_text(json.dumps({"parameters": parameters}))
        start, current = time.perf_counter(), None
        for item in items:
            if pace is not None:
                frame = frame_of(item)
                if frame != current:
                    current = frame
                    delay = start + frame * pace - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
            if isinstance(item, ismrmrd.Image):
                connection.send_image(item)
            else:
                connection.send_acquisition(item)
        connection.send_close()
    except ProtocolError as exc:
        reply.error = str(exc)  # the server closed early; its reply says why
    reader.join(timeout)
    connection.shutdown_close()
    return reply


def read_mrd_file(path: str | Path, group: str | None = None) -> tuple[str, list]:
    """The XML header and the acquisitions or images of an MRD HDF5 file (as python-ismrmrd-server's client sends them)."""
    import h5py
    import ismrmrd

    with h5py.File(path, "r") as h5:
        group = group or next(iter(h5.keys()))
    with ismrmrd.Dataset(str(path), group, create_if_needed=False) as dataset:
        names = dataset.list()
        xml = dataset.read_xml_header()
        xml = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
        items = []
        if "data" in names:
            items += [dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())]
        for name in sorted(n for n in names if n.startswith("image")):
            items += [dataset.read_image(name, i) for i in range(dataset.number_of_images(name))]
    return xml, items


def main(argv: list[str] | None = None) -> int:
    """``python -m mrisr.serve.client FILE.h5 -c mrisr [-o OUT.h5]``: send an MRD file, save the reply."""
    import ismrmrd

    parser = argparse.ArgumentParser(description="Send an MRD file to an MRD server and save the images it returns.")
    parser.add_argument("filename")
    parser.add_argument("-a", "--address", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=9002)
    parser.add_argument("-c", "--config", default="mrisr")
    parser.add_argument("-o", "--outfile")
    parser.add_argument("--parameters", help="JSON parameters, e.g. '{\"maps\": true}'")
    args = parser.parse_args(argv)
    xml, items = read_mrd_file(args.filename)
    reply = send_series(args.address, args.port, args.config, xml, items,
                        json.loads(args.parameters) if args.parameters else None)
    for text in reply.texts:
        print(text)
    if args.outfile and reply.images:
        with ismrmrd.Dataset(args.outfile, "dataset", create_if_needed=True) as out:
            out.write_xml_header(xml.encode("utf-8"))
            for image in reply.images:
                out.append_image(f"image_{image.image_series_index}", image)
    print(f"{len(reply.images)} image(s) received" + (f", saved to {args.outfile}" if args.outfile and reply.images else ""))
    return 1 if reply.errors or reply.error or not reply.closed else 0


if __name__ == "__main__":
    raise SystemExit(main())
