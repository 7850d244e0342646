"""`grain`'s main: every failure of a subcommand is one line on stderr with an exit code (issue 10), and --debug
(anywhere on the line) or GRAIN_PL_DEBUG=1 shows the traceback instead."""

from __future__ import annotations

import errno
import os

import pytest

from grain_pl.commands import main


def failing_command(monkeypatch, error: BaseException) -> None:
    """`grain setup-lpips` (the lightest command) raising `error`."""

    def run(args):
        raise error

    monkeypatch.setattr("grain_pl.commands.setup_lpips._run_setup_lpips", run)
    monkeypatch.delenv("GRAIN_PL_DEBUG", raising=False)


@pytest.mark.parametrize(("error", "code", "expected"), [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/x.png"), 2, "out/x.png: No space left on device"),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES), "out"), 2, "out: Permission denied"),
    (OSError(errno.EROFS, os.strerror(errno.EROFS), "a", None, "b"), 2, "a -> b: Read-only file system"),
    (MemoryError(), 1, "out of memory; a smaller input, batch size or preset may fit (--debug shows the traceback)"),
    (RuntimeError("boom\nsecond line"), 1,
     "unexpected RuntimeError: boom (a bug: please report it with the traceback that --debug shows)"),
    (KeyError("weights"), 1, "unexpected KeyError: 'weights'"),
])
def test_a_failure_is_one_line_with_its_exit_code(error, code, expected, monkeypatch, capsys):
    failing_command(monkeypatch, error)
    assert main(["setup-lpips"]) == code
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("grain setup-lpips: error: ")
    assert expected in captured.err and "Traceback" not in captured.err


def test_an_interrupt_says_what_is_left_and_exits_130(monkeypatch, capsys):
    failing_command(monkeypatch, KeyboardInterrupt())
    assert main(["setup-lpips"]) == 130
    assert capsys.readouterr().err == "grain setup-lpips: interrupted; nothing half-written is left; rerun it\n"
    failing_command(monkeypatch, KeyboardInterrupt("the rows so far are in x.csv"))  # a command's own account
    assert main(["setup-lpips"]) == 130
    assert capsys.readouterr().err == "grain setup-lpips: interrupted; the rows so far are in x.csv\n"


@pytest.mark.parametrize("where", ["before", "after", "environment"])
@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("boom"),
                                   KeyboardInterrupt()])
def test_debug_shows_the_traceback(where, error, monkeypatch):
    failing_command(monkeypatch, error)
    argv = {"before": ["--debug", "setup-lpips"], "after": ["setup-lpips", "--debug"]}.get(where, ["setup-lpips"])
    if where == "environment":
        monkeypatch.setenv("GRAIN_PL_DEBUG", "1")
    with pytest.raises(type(error)):
        main(argv)


def test_debug_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--debug" in capsys.readouterr().out
