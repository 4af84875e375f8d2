"""The CLI's shared boundary: warnings (Python's and nibabel's) become one ``warning:`` line each on
stderr, never stdout; SIGTERM is turned into the same unwinding as Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import warnings

import pytest
import typer

from mrisr.cli.common import user_errors


def test_warnings_are_one_line_on_stderr_and_nothing_on_stdout(capsys):
    with user_errors():
        warnings.warn("a warning\nover two lines", UserWarning, stacklevel=1)
        logging.getLogger("nibabel.global").warning("header\nproblem")
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["warning: a warning over two lines", "warning: nibabel: header problem"]
    assert not any(type(h).__name__ == "_NibabelLines" for h in logging.getLogger("nibabel").handlers)


def test_sigterm_unwinds_like_ctrl_c(capsys, tmp_path):
    unwound = tmp_path / "unwound"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(typer.Exit) as exc:
        with user_errors("partial files removed"):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs between bytecodes
                    pass
            finally:
                unwound.write_text("cleanup ran")
    assert exc.value.exit_code == 143
    assert unwound.read_text() == "cleanup ran"
    assert capsys.readouterr().err.strip() == "terminated (SIGTERM): partial files removed"
    assert signal.getsignal(signal.SIGTERM) is before
