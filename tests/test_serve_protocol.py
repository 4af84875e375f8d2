"""`mrisr serve` refuses broken streams: each malformed, truncated or oversized message, unknown
identifier, early disconnect or frame of another matrix ends that connection with one logged line,
and the server serves the next client. Also: SIGTERM stops `mrisr serve` cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ismrmrd")

import ismrmrd  # noqa: E402
from serve_testdata import running_server, xml_header  # noqa: E402

from mrisr.io.mrd_images import volume_to_images  # noqa: E402
from mrisr.models import make_tiny_checkpoint  # noqa: E402
from mrisr.serve import StreamLimits  # noqa: E402
from mrisr.serve.client import send_series  # noqa: E402

XML = xml_header(study="5.5.5")
AFFINE = np.diag([2.0, 2.0, 4.0, 1.0])


def _id(n: int) -> bytes:
    return struct.pack("<H", n)


def _text(identifier: int, body: bytes) -> bytes:
    return _id(identifier) + struct.pack("<I", len(body)) + body


def _config(name: str = "mrisr") -> bytes:
    return _id(1) + name.encode().ljust(1024, b"\x00")


def _image_bytes(image, attributes: bytes | None = None, pixels: bytes | None = None, head=None) -> bytes:
    head = head or image.getHead()
    attributes = image.attribute_string.encode() if attributes is None else attributes
    pixels = image.data.tobytes() if pixels is None else pixels
    return _id(1022) + bytes(head) + struct.pack("<Q", len(attributes)) + attributes + pixels


def _frame(t: int, shape=(12, 12, 8), value: float | None = None) -> bytes:
    data = np.random.default_rng(t).random(shape).astype(np.float32) + 0.5
    if value is not None:
        data[:] = value
    return b"".join(_image_bytes(i) for i in volume_to_images(data, AFFINE, repetition=t))


def _one_image():
    return volume_to_images(np.ones((12, 12, 1), dtype=np.float32), AFFINE)[0]


def _edited_head(**fields):
    head = ismrmrd.ImageHeader.from_buffer_copy(bytes(_one_image().getHead()))
    for name, value in fields.items():
        if name == "matrix_size":
            head.matrix_size[:] = value
        else:
            setattr(head, name, value)
    return head


def _acquisition_bytes(samples: int, channels: int) -> bytes:
    head = ismrmrd.AcquisitionHeader()
    head.number_of_samples, head.active_channels = samples, channels
    return _id(1008) + bytes(head)


START = _config() + _text(3, XML.encode())
CLOSE = _id(4)
NOPRIOR = {}  # filled with the tiny model's path by the fixture

#: name: (bytes sent, then half-close; the one-line error expected)
CASES = {
    "unknown identifier first": (lambda: _id(999), "unknown message identifier 999"),
    "unknown identifier mid-stream": (lambda: START + _id(4242), "unknown message identifier 4242"),
    "header before config": (lambda: _text(3, XML.encode()), "must start with a config message"),
    "truncated config name": (lambda: _id(1) + b"mrisr", "stream truncated"),
    "oversized config text": (lambda: _id(2) + struct.pack("<I", 0xFFFFFFF0), "exceeds the 65536-byte limit"),
    "oversized XML header": (lambda: _config() + _id(3) + struct.pack("<I", 0x7FFFFFFF), "exceeds the 65536-byte limit"),
    "truncated length": (lambda: _config() + _id(3) + b"\x01\x00", "stream truncated"),
    "garbage XML header": (lambda: _config() + _text(3, b"<garbage>not ismrmrd</garbage>") + CLOSE,
                           "is not an ISMRMRD header"),
    "config text not UTF-8": (lambda: _text(2, b"\xff\xfe\xfa"), "not UTF-8"),
    "unknown config": (lambda: _config("bogus") + _text(3, XML.encode()) + CLOSE, "config 'bogus' is not one of"),
    "parameters not JSON": (lambda: START + _text(5, b"{not json") + CLOSE, "not JSON parameters"),
    "unknown parameter": (lambda: START + _text(5, b'{"parameters": {"colour": "red"}}') + CLOSE,
                          "unknown parameter(s) colour"),
    "bad option value": (lambda: START + _text(5, b'{"parameters": {"factor": 40}}') + CLOSE, "factor = 40"),
    "fine-tuning inline": (lambda: START + _text(5, b'{"parameters": {"finetune": true}}') + CLOSE,
                           "cannot run inline"),
    "image matrix oversized": (lambda: START + _image_bytes(_one_image(), head=_edited_head(matrix_size=(65535,) * 3)),
                               "outside 1..512 per axis"),
    "image data type unknown": (lambda: START + _image_bytes(_one_image(), head=_edited_head(data_type=99)),
                                "data type 99"),
    "image attributes oversized": (lambda: START + _id(1022) + bytes(_one_image().getHead()) + struct.pack("<Q", 1 << 60),
                                   "attributes of 1152921504606846976 bytes"),
    "image pixels truncated": (lambda: START + _image_bytes(_one_image())[:-100], "stream truncated"),
    "image over the message bound": (lambda: START + _image_bytes(_one_image(), head=_edited_head(matrix_size=(512, 512, 8))),
                                     "message limit"),
    "acquisition oversized": (lambda: START + _acquisition_bytes(60000, 1000), "beyond the limits"),
    "disconnect mid-frame": (lambda: START + _frame(0)[: len(_frame(0)) // 2 // 3 * 1], "stream truncated"),
    "disconnect between messages": (lambda: START + b"".join(_image_bytes(i) for i in volume_to_images(
        np.ones((12, 12, 8), np.float32), AFFINE)[:3]), "disconnected without a close message"),
    "second header mid-stream": (lambda: START + _text(3, XML.encode()), "a second XML header"),
    "two channels": (lambda: START + _image_bytes(ismrmrd.Image(head=bytes(_one_image().getHead()),
                                                                data=np.ones((2, 1, 12, 12), np.float32))) + CLOSE,
                     "2 channels"),
    "matrix change": (lambda: START + _text(5, json.dumps({"parameters": NOPRIOR}).encode()) + _frame(0) + _frame(1)
                      + _frame(2, shape=(16, 16, 8)) + CLOSE, "frame 2 has matrix 16x16x8"),
    "NaN frame": (lambda: START + _text(5, json.dumps({"parameters": NOPRIOR}).encode()) + _frame(0, value=np.nan) + CLOSE,
                  "NaN/Inf"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    NOPRIOR["model"] = str(make_tiny_checkpoint(tmp_path_factory.mktemp("serve_protocol") / "tiny.safetensors",
                                                prior=False))
    limits = StreamLimits(text_bytes=1 << 16, message_bytes=1 << 20, matrix=512, idle_seconds=2)
    with running_server({"device": "cpu", "precision": "fp32"}, limits=limits) as running:
        yield running


def _exchange(address, payload: bytes) -> bytes:
    with socket.create_connection(address, timeout=20) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may have closed already: that is a refusal too
        received = b""
        while True:
            try:
                chunk = sock.recv(1 << 16)
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    return received


def _wait_for_result(server, before: int) -> None:
    """The server records a session after its close message went out: wait for the record."""
    deadline = time.monotonic() + 20
    while len(server.results) <= before and time.monotonic() < deadline:
        time.sleep(0.02)


def _still_serves(server):
    before = len(server.results)
    reply = send_series(*server.address, "mrisr-planning", XML,
                        volume_to_images(np.ones((24, 24, 8), np.float32), AFFINE, slices=False))
    assert reply.closed and not reply.errors, reply.texts
    _wait_for_result(server, before)


def test_there_are_at_least_20_cases():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_stream_is_refused_and_the_server_goes_on(server, name, caplog):
    make, expected = CASES[name]
    before = len(server.results)
    with caplog.at_level("ERROR", logger="mrisr.serve"):
        _exchange(server.address, make())
        _wait_for_result(server, before)
    result = server.results[-1]
    assert result.error is not None and expected in result.error, result.error
    errors = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert any(expected in message for message in errors), errors
    assert all("\n" not in message for message in errors)
    _still_serves(server)


def test_a_silent_client_is_dropped_after_the_idle_bound(server):
    before = len(server.results)
    with socket.create_connection(server.address, timeout=20) as sock:
        sock.sendall(START)
        start = time.monotonic()
        assert sock.recv(1 << 16, socket.MSG_WAITALL) is not None
        while sock.recv(1 << 16):
            pass
        assert time.monotonic() - start < 10
    _wait_for_result(server, before)
    assert "no data for 2 s" in server.results[-1].error
    _still_serves(server)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sigterm_stops_mrisr_serve_cleanly_even_with_a_client_connected():
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen([sys.executable, "-c", "from mrisr.cli import main; main()", "serve", "--port",
                                str(port), "--device", "cpu"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if re.search(rf"listening on 127\.0\.0\.1:{port}", line):
                break
        else:
            pytest.fail("".join(lines))
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(START)  # a connected client mid-stream, waiting
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        rest = process.stderr.read()
        assert "stopped" in rest, rest
        assert "Traceback" not in rest, rest
        client.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
