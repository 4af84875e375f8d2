"""``mrisr serve``: a TCP server speaking the MRD stream, one client at a time.

Each connection is read as python-ismrmrd-server reads one: the config (name or text), the XML
header, optionally a text message of JSON parameters, then the items until the close message;
:func:`mrisr.serve.session.run_session` does the work. A connection that breaks the protocol or
sends data mrisr cannot use gets a one-line logged error, a logging message and a close, and
the server accepts the next client. Clients beyond the one served wait in the listen queue
(``backlog``). :meth:`MrdServer.stop` (SIGTERM and SIGINT in :func:`run_server`) ends the
session in progress at its next message and returns from :meth:`MrdServer.serve_forever`.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import threading
from collections import deque

from mrisr.serve.protocol import MRD_MESSAGE_TEXT, MrdConnection, ProtocolError, StreamLimits
from mrisr.serve.session import SessionResult, run_session
from mrisr.serve.store import PriorStore

__all__ = ["DEFAULT_PORT", "MrdServer", "run_server"]

log = logging.getLogger("mrisr.serve")

#: python-ismrmrd-server's port
DEFAULT_PORT = 9002


class MrdServer:
    """A listening MRD server.

    Args:
        host: address to listen on (``127.0.0.1``: this machine only).
        port: TCP port (0: any free one; see :attr:`address`).
        defaults: reconstruction options every connection starts from (its parameters override them).
        limits: the stream's bounds.
        store: planning scans between connections (default: a new :class:`PriorStore`).
        backlog: clients that may wait while one is served.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, defaults: dict | None = None,
                 limits: StreamLimits | None = None, store: PriorStore | None = None, backlog: int = 4) -> None:
        self.defaults = dict(defaults or {})
        self.limits = limits or StreamLimits()
        self.store = store if store is not None else PriorStore()
        self._stop = threading.Event()
        try:
            self._socket = socket.create_server((host, port), backlog=backlog)
        except OSError as exc:
            raise OSError(f"mrisr serve: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                          "choose another --port or stop the program using it") from None
        self._socket.settimeout(0.25)
        self.address: tuple[str, int] = self._socket.getsockname()[:2]
        #: the last sessions' results, newest last
        self.results: deque[SessionResult] = deque(maxlen=256)

    def stop(self) -> None:
        """Stop accepting; the session in progress ends at its next message (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def serve_forever(self) -> None:
        """Accept and serve clients one at a time until :meth:`stop`."""
        log.info("mrisr serve listening on %s:%d", *self.address)
        try:
            while not self._stop.is_set():
                try:
                    client, peer = self._socket.accept()
                except TimeoutError:
                    continue
                except OSError:
                    if self._stop.is_set():
                        break
                    raise
                self.handle(client, f"{peer[0]}:{peer[1]}")
        finally:
            self._socket.close()
            log.info("mrisr serve stopped")

    def handle(self, client: socket.socket, peer: str) -> SessionResult:
        """Serve one connected client to its end; never raises."""
        connection = MrdConnection(client, self.limits, name=peer, stopping=self._stop.is_set)
        log.info("%s: connected", peer)
        result = SessionResult()
        try:
            config = connection.read_config()
            metadata = connection.read_metadata() if config is not None else None
            if config is None or metadata is None:
                log.info("%s: closed before %s", peer, "a config" if config is None else "an XML header")
                return result
            config = self._parameters(connection, config)
            result = run_session(connection, config, metadata, self.store, self.defaults, cancel=self._stop.is_set)
        except ProtocolError as exc:
            result.error = str(exc)
            log.error("%s", exc)
            try:
                connection.send_logging("ERROR", result.error)
                connection.send_close()
            except (OSError, ProtocolError):
                pass  # the client has gone
        finally:
            connection.shutdown_close()
            self.results.append(result)
            log.info("%s: %s, %d frame(s), %d image(s) sent%s", peer, result.role, result.frames, result.images_sent,
                     f", error: {result.error}" if result.error else "")
        return result

    @staticmethod
    def _parameters(connection: MrdConnection, config: str):
        """The config, merged with the JSON parameters of a text message right after the header."""
        identifier, payload = connection.read_message()
        if identifier != MRD_MESSAGE_TEXT:
            connection.push_back(identifier, payload)
            return config
        try:
            parameters = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"{connection.name}: the text after the XML header is not JSON parameters "
                                f"({exc.msg} at character {exc.pos}); refused") from None
        if not isinstance(parameters, dict):
            raise ProtocolError(f"{connection.name}: the JSON parameters are not an object; refused")
        inner = parameters.get("parameters", parameters)
        if isinstance(inner, dict) and not (inner.get("config") or inner.get("customconfig")):
            inner = {**inner, "config": config}
        return {"parameters": inner}


def run_server(host: str = "127.0.0.1", port: int = DEFAULT_PORT, defaults: dict | None = None,
               limits: StreamLimits | None = None, store: PriorStore | None = None) -> None:
    """Serve until SIGTERM or SIGINT (from the main thread), then return."""
    server = MrdServer(host, port, defaults, limits, store)
    # the pipeline (torch) is imported before the first client, not during its first frame
    import mrisr.reconstruct.pipeline  # noqa: F401

    def on_signal(signum, frame) -> None:
        log.info("signal %d: stopping", signum)
        server.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
