"""python-ismrmrd-server / FIRE module ``mrisr_fire``: super-resolve the dynamic this connection streams.

python-ismrmrd-server imports the module its config names and calls ``process``; copy this file
next to its ``main.py`` (the Dockerfile beside it does) and send the dynamic with ``-c mrisr_fire``.
Options come from the JSON parameters (docs/serve.md).
"""

from mrisr.serve.session import process as _process


def process(connection, config, metadata):
    return _process(connection, config, metadata, role="dynamic")
