"""python-ismrmrd-server / FIRE module ``mrisr_fire_planning``: store the planning series of this connection.

Send the planning series with ``-c mrisr_fire_planning`` before the dynamic (``-c mrisr_fire``);
the two connections must reach the same server process (run it without ``-m``/multiprocessing).
"""

from mrisr.serve.session import process as _process


def process(connection, config, metadata):
    return _process(connection, config, metadata, role="planning")
