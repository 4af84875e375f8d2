"""Build hook: the wheel carries the repository's ``configs/`` (training and batch recipes) and
``pipelines/`` (Snakemake workflow and profiles) as ``mrisr/_shipped/``, one copy in the source
tree; :mod:`mrisr.resources` finds them there, or in the checkout for an editable install.
Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("configs", "pipelines")


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        target = Path(self.build_lib) / "mrisr" / "_shipped"
        for folder in SHIPPED:
            shutil.copytree(root / folder, target / folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", ".snakemake", "*.pyc"))


setup(cmdclass={"build_py": BuildPyWithShipped})
