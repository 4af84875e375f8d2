"""The command line as a shell user meets it: --version, completion, help at 80 columns, progress on
stderr (a redirected stdout gets only the result). Real subprocesses, a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
import typer

import mrisr
from mrisr.cli import app

MRISR = str(Path(sys.executable).parent / "mrisr")


def run(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([MRISR, *map(str, args)], capture_output=True, text=True, encoding="utf-8", timeout=300,
                          env={**os.environ, **(env or {})})


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout == f"mrisr {mrisr.__version__}\n"


def test_shell_completion_completes_commands_and_options():
    script = run("--show-completion", "bash", env={"SHELL": "/bin/bash"})
    assert result_ok(script) and "_mrisr_completion" in script.stdout and "complete" in script.stdout
    # what bash calls on <TAB>
    words = run(env={"_MRISR_COMPLETE": "complete_bash", "COMP_WORDS": "mrisr recon", "COMP_CWORD": "1"})
    assert words.stdout.split() == ["reconstruct"]
    options = run(env={"_MRISR_COMPLETE": "complete_bash", "COMP_WORDS": "mrisr reconstruct --finetune-m",
                       "COMP_CWORD": "2"})
    assert options.stdout.split() == ["--finetune-minutes"]


def result_ok(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 0


def _commands() -> dict[str, click.Command]:
    group = typer.main.get_command(app)
    return {"": group, **group.commands}


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_reads_whole_at_80_columns(name):
    command = _commands()[name]
    result = run(*([name] if name else []), "--help", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, [line for line in lines if len(line) > 80]
    # nothing cut short: rich's ellipsis, or click's "..." ending a shortened command summary
    assert "…" not in result.stdout and not [line for line in lines[1:] if line.rstrip().endswith("...")]
    names = [opt for param in command.params if not getattr(param, "hidden", False)
             for opt in (*param.opts, *getattr(param, "secondary_opts", ())) if opt.startswith("-")]
    shown = set(re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", result.stdout))
    assert {*names, "--help"} <= shown, {*names, "--help"} - shown


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict[str, Path]:
    from test_batch_cohort import tiny_static

    from mrisr.models import make_tiny_checkpoint
    from mrisr.phantom import make_dynamic

    folder = tmp_path_factory.mktemp("cli-app")
    files = make_dynamic(tiny_static(), frames=3, keep=25.0, seed=0).save(folder / "phantom")
    files["model"] = make_tiny_checkpoint(folder / "tiny.safetensors", prior=True)
    return files


def test_progress_goes_to_stderr_and_the_summary_rate_matches_the_bar(phantom, tmp_path):
    """stderr is a terminal (the bar is drawn), stdout a pipe (as in ``> result.txt``)."""
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    out = tmp_path / "sr.nii.gz"
    process = subprocess.run(
        [MRISR, "reconstruct", str(phantom["lr"]), "--prior", str(phantom["planning"]), "--model",
         str(phantom["model"]), "-o", str(out)],
        stdout=subprocess.PIPE, stderr=slave, timeout=300, env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(slave)
    reader.join(timeout=30)
    os.close(master)
    stdout = process.stdout.decode()
    stderr = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, stderr
    # stdout: the result line only
    assert stdout.count("\n") == 1 and stdout.startswith(f"{out}: 3 frame(s)"), stdout
    # stderr: the bar, ending at 3/3 with the mean rate the summary reports
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stderr)
    assert "frames" in plain and "3/3" in plain, plain
    bar_rates = re.findall(r"(\d+\.\d\d) s/frame", plain)
    summary_rate = re.search(r"(\d+\.\d\d) s/frame", stdout).group(1)
    assert bar_rates and bar_rates[-1] == summary_rate
