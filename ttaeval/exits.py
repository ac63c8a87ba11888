"""The exit-code contract of ``ttaeval`` and ``resonate-train``, and the one place that maps an
exception to a code and a one-line message naming the file.

====  ==========================================================================================
code  meaning
====  ==========================================================================================
0     everything asked was done (every clip scored)
1     some clips failed; their failures are recorded in the store (``ttaeval export`` lists them)
2     usage or input error: a bad option or value, an unreadable or malformed input file
      (prompts, TOML, checkpoint, ratings), a run folder used for something else
3     environment or storage failure: disk full, read-only or unwritable folder, a corrupt store or
      one written by a newer ttaeval, out of memory — or an internal error of the tool
====  ==========================================================================================

Ctrl-C exits with 130. No traceback is printed unless ``--debug`` is given (or ``TTAEVAL_DEBUG=1`` is set).
"""

from __future__ import annotations

import errno
import os
import pickle
import sqlite3
import traceback
import zipfile

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

OK, CLIPS_FAILED, USAGE, ENVIRONMENT = 0, 1, 2, 3
INTERRUPTED = 130
"""Ctrl-C (SIGINT), as shells report a process a signal stopped."""

_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                       errno.EFBIG, errno.ENOMEM}  # fmt: skip


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that reached the command line."""
    from ttaeval.store import StorageError, StoreError

    raw = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = " ".join(str(raw).split()) or type(exc).__name__
    if isinstance(exc, StorageError | MemoryError):
        return ENVIRONMENT, text if not isinstance(exc, MemoryError) else f"out of memory: {text}"
    if isinstance(exc, sqlite3.Error):
        return ENVIRONMENT, f"the run store failed: {text}"
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        where = f"{exc.filename}: " if exc.filename else ""
        return ENVIRONMENT, f"{where}{os.strerror(exc.errno)}" + (f" ({text})" if not where else "")
    if isinstance(exc, RecursionError):
        return USAGE, "input nested too deeply to read (a JSON or TOML file?)"
    if isinstance(exc, StoreError | OSError | ValueError | KeyError | TypeError | ImportError
                   | pickle.UnpicklingError | zipfile.BadZipFile):  # fmt: skip
        return USAGE, text
    if type(exc).__name__ == "SafetensorError":
        return USAGE, f"not a readable safetensors file: {text}"
    return ENVIRONMENT, f"internal error: {type(exc).__name__}: {text} (rerun with --debug for the traceback)"


def debugging() -> bool:
    return os.environ.get("TTAEVAL_DEBUG", "") not in ("", "0")


PASS_THROUGH: tuple[type[BaseException], ...] = (
    typer.Exit, typer.Abort, click.exceptions.Exit, click.ClickException, click.exceptions.Abort,
)  # fmt: skip
"""Exceptions click turns into its own exit (a usage error: 2 with its message; an explicit exit)."""
try:  # typer >= 0.29 runs on its own copy of click: its usage errors are these classes
    from typer._click import exceptions as _vendored

    PASS_THROUGH += (_vendored.ClickException,)
except ImportError:
    pass


class ExitCodeGroup(TyperGroup):
    """A command group whose commands end with the contract's code and one line, never a traceback
    (unless debugging)."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except PASS_THROUGH:
            raise
        except KeyboardInterrupt:  # not click's "Aborted!" with 1, which reads as "some clips failed"
            _stderr().print("interrupted: what was committed is kept; run again to resume")
            raise typer.Exit(INTERRUPTED) from None
        except Exception as exc:
            if debugging() or (ctx.params or {}).get("debug"):
                _stderr().print(traceback.format_exc(), markup=False, highlight=False)
            raise failure(exc) from None


def _stderr() -> Console:
    """Messages go to stderr unwrapped: one line each, whatever the terminal's (or a log's) width."""
    return Console(stderr=True, soft_wrap=True)


def failure(exc: BaseException, console: Console | None = None) -> typer.Exit:
    """Print the one line the contract gives ``exc`` and return the exit with its code."""
    from ttaeval.io.folder import printable

    code, message = classify(exc)
    label = "[red]error:[/red]" if code == USAGE else "[red]failed:[/red]"
    (console or _stderr()).print(f"{label} {escape(printable(message))}", highlight=False)
    return typer.Exit(code)
