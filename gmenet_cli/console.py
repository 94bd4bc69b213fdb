"""Console output at the edge: Rich on stderr for people, plain stdout for data.

Library code never prints; it returns data and reports progress through callbacks. The CLI renders with
the helpers here. `fail` turns any user-fixable error into one line on stderr and an exit code.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback

import typer
from rich.console import Console

# Typer's own usage errors (Typer >= 0.2x vendors Click; older releases use the click package).
_CLICK_ERRORS = tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

err = Console(stderr=True, highlight=False, soft_wrap=True)  # long lines (commands, paths) stay copy-pasteable


def table_console(stderr: bool = False) -> Console:
    """Where tables for the user's eyes go (stdout, or stderr for the reports of commands whose stdout is
    data). On a terminal Rich fits them to its width; piped or redirected there is no width to fit, so
    nothing wraps (Rich would otherwise assume 80 columns and split model names and boxes over lines)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 10_000)


def data_out(line: str) -> None:
    """One line of machine-readable output on stdout (flushed, so pipelines see it at once)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def reflow(doc: str | None) -> str | None:
    """A docstring as --help shows it: each paragraph on one line, for Rich to wrap to the terminal (Typer keeps
    the source's line breaks, which left ragged half-lines at other widths)."""
    if not doc:
        return doc
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def handle_errors(fn):
    """Wrap a command: GmenetError -> `error: msg` + its exit code; anything else -> one line, exit 1. Its
    docstring is reflowed for --help."""
    fn.__doc__ = reflow(fn.__doc__)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from gmenet_cli.errors import GmenetError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, *_CLICK_ERRORS):
            raise  # Click renders its own usage errors (exit 2)
        except GmenetError as e:
            err.print(f"[red]error:[/red] {e}", markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # the reader went away (`gmenet predict ... | head`): stop quietly, as Unix tools do; point stdout
            # at /dev/null so the interpreter's last flush cannot complain either
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None
        except ModuleNotFoundError as e:
            missing = (e.name or "").split(".")[0]
            if missing in OPTIONAL_MODULES:
                err.print(f"[red]error:[/red] this needs {missing}, which is not installed (a predict-only install "
                          f"runs gmenet predict with the shipped .onnx models); {OPTIONAL_MODULES[missing]}",
                          soft_wrap=True)
                raise typer.Exit(1) from None
            _internal(e)
        except MemoryError:
            err.print("[red]error:[/red] out of memory; try a smaller --batch-size")
            raise typer.Exit(1) from None
        except OSError as e:
            if os.environ.get("GMENET_DEBUG"):
                traceback.print_exc()
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            err.print(f"[red]error:[/red] {e.strerror or e}{where}", soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as e:  # noqa: BLE001 - the promise is: never a traceback for users
            _internal(e)

    return wrapper


# Modules that a predict-only install (requirements-predict.txt) leaves out, and how to get each.
OPTIONAL_MODULES = {"torch": "pip install torch==2.14.1 torchvision==0.29.1", "torchvision": "pip install torchvision",
                    "onnx": "pip install onnx", "matplotlib": "pip install matplotlib"}


def _internal(e: Exception):
    """Anything unexpected: one line (a traceback only with GMENET_DEBUG=1), exit 1."""
    if os.environ.get("GMENET_DEBUG"):
        traceback.print_exc()
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    err.print(f"[red]internal error:[/red] {type(e).__name__}: {first[:200]} (set GMENET_DEBUG=1 for details)",
              soft_wrap=True)
    raise typer.Exit(1) from None
