"""The inline face: ``mrisr serve``, an MRD (ISMRMRD streaming) server for the scanner's reconstruction chain.

- :mod:`mrisr.serve.protocol`: the MRD v1 message framing, every size bounded before allocation.
- :mod:`mrisr.serve.session`: one connection's work; :func:`process` is python-ismrmrd-server's
  module contract (FIRE).
- :mod:`mrisr.serve.store`: planning scans kept between connections.
- :mod:`mrisr.serve.server`: the TCP server (one client at a time, SIGTERM stops it).
- :mod:`mrisr.serve.client`: an example client (the tests' and ``scripts/serve_client_example.py``'s).

See docs/serve.md.
"""

from mrisr.serve.protocol import MrdConnection, ProtocolError, StreamLimits
from mrisr.serve.server import DEFAULT_PORT, MrdServer, run_server
from mrisr.serve.session import DYNAMIC_CONFIG, PLANNING_CONFIG, SessionResult, process, run_session
from mrisr.serve.store import PriorStore

__all__ = ["DEFAULT_PORT", "DYNAMIC_CONFIG", "PLANNING_CONFIG", "MrdConnection", "MrdServer", "PriorStore",
           "ProtocolError", "SessionResult", "StreamLimits", "process", "run_server", "run_session"]
