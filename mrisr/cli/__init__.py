"""Command-line interface. Each command lives in its own module and registers on ``app``."""

from __future__ import annotations

from mrisr.cli import batch as _batch  # noqa: E402,F401
from mrisr.cli import demo as _demo  # noqa: E402,F401
from mrisr.cli import evaluate as _evaluate  # noqa: E402,F401
from mrisr.cli import finetune as _finetune  # noqa: E402,F401
from mrisr.cli import info as _info  # noqa: E402,F401
from mrisr.cli import phantom as _phantom  # noqa: E402,F401
from mrisr.cli import reconstruct as _reconstruct  # noqa: E402,F401
from mrisr.cli import resources as _resources  # noqa: E402,F401
from mrisr.cli import serve as _serve  # noqa: E402,F401

# command modules: importing registers them (keep heavy imports inside the commands)
from mrisr.cli import simulate as _simulate  # noqa: E402,F401,I001
from mrisr.cli import train as _train  # noqa: E402,F401
from mrisr.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
