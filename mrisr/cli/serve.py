"""`mrisr serve`: the inline MRD server (python-ismrmrd-server / FIRE protocol) beside a scanner."""

from __future__ import annotations

import typer

from mrisr.cli.app import app
from mrisr.cli.common import fail, schema_option, user_errors


@app.command(short_help="Inline MRD server: super-resolve a dynamic as the scanner streams it.")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every interface)."),
    port: int = typer.Option(9002, "--port", min=0, max=65535, help="TCP port (python-ismrmrd-server's 9002)."),
    method: str = schema_option("method"),
    model: str = schema_option("model"),
    prior_mode: str = schema_option("prior_mode"),
    device: str = schema_option("device"),
    threads: int = schema_option("threads"),
    precision: str = schema_option("precision"),
    maps: bool = schema_option("maps", "--maps"),
    max_message_mb: int = typer.Option(512, "--max-message-mb", min=1, help="Largest acquisition or image message accepted (MiB)."),
    idle_seconds: float = typer.Option(600.0, "--idle-seconds", min=1.0, help="Drop a client silent this long mid-stream."),
    prior_store: int = typer.Option(8, "--prior-store", min=1, help="Planning scans kept between connections (oldest dropped first)."),
    prior_store_mb: int = typer.Option(2048, "--prior-store-mb", min=1, help="Bytes of planning scans kept (MiB)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Log warnings and errors only."),
) -> None:
    """Serve MRD clients: a planning series (config mrisr-planning) is stored by study; a dynamic
    (config mrisr) is super-resolved frame by frame against it and sent back as images.

    One client at a time; SIGTERM or Ctrl-C stops the server cleanly. The options here are the
    defaults of every connection; a client's JSON parameters override them (docs/serve.md).
    """
    import logging

    from mrisr.reconstruct import ReconstructOptions
    from mrisr.serve import PriorStore, StreamLimits, run_server

    defaults = {"method": method, "model": model, "prior_mode": prior_mode, "device": device, "threads": threads,
                "precision": precision, "maps": maps}
    with user_errors():
        ReconstructOptions(**defaults)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    limits = StreamLimits(message_bytes=max_message_mb << 20, idle_seconds=idle_seconds)
    try:
        run_server(host, port, defaults, limits, PriorStore(prior_store, prior_store_mb << 20))
    except OSError as exc:
        fail(str(exc))
