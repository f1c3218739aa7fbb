"""Shared command-line plumbing: one-line errors, warnings, exit codes.

Every tool has ``get_parser()`` returning an ``argparse.ArgumentParser`` and
``main(argv=None) -> int`` that calls :func:`run` with its implementation.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

from s2l_tools.device import keep_freed_memory
from s2l_tools.errors import S2LError, S2LWarning


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples' line breaks and show each default once, with its value.

    A default is added as ``(default: VALUE)`` unless the help already says
    it (any "default" in the text), or there is no value to show: None, an
    empty list (``action="append"``), a flag's True/False, or a suppressed
    default.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is None or default is argparse.SUPPRESS or isinstance(default, bool)
                or action.nargs == 0 or (isinstance(default, (list, tuple)) and not default)
                or "default" in text.lower()):
            return text
        return super()._get_help_string(action)


def make_parser(prog: str, description: str, example: str) -> argparse.ArgumentParser:
    """A parser with the tool's description, an example epilog and ``--debug``."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="example:\n" + example.strip("\n"),
        formatter_class=_Formatter,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    return parser


def add_subcommand(subparsers, name: str, help: str, example: str,
                   description: str | None = None) -> argparse.ArgumentParser:
    """A sub-command's parser, with its own example epilog, like :func:`make_parser`'s."""
    return subparsers.add_parser(
        name, help=help, description=description or help,
        epilog="example:\n" + example.strip("\n"), formatter_class=_Formatter,
    )


def add_declump_arguments(parser) -> None:
    """``--declump {watershed,none}`` (default
    :data:`s2l_tools.inference.postprocess.DEFAULT_DECLUMP`) and its older spelling
    ``--watershed``, both into ``args.declump``."""
    from s2l_tools.inference.postprocess import DEFAULT_DECLUMP

    parser.add_argument("--declump", choices=("watershed", "none"), default=DEFAULT_DECLUMP,
                        help="split touching cells with a distance-transform watershed, or "
                        "not (none: touching cells stay one object)")
    parser.add_argument("--watershed", dest="declump", action="store_const", const="watershed",
                        help="the same as --declump watershed (now the default)")


def gains(text: str) -> tuple[float, ...]:
    """The argparse type of ``--gains``: ``1,1.5,2`` -> (1.0, 1.5, 2.0), a bad value one
    argparse line (:func:`s2l_tools.inference.tiling.parse_gains`)."""
    from s2l_tools.inference.tiling import parse_gains

    try:
        return parse_gains(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: what ``--gains`` does, for the --help of s2l-predict and s2l-cellprofiler pipeline
GAINS_HELP = ("average the prediction over each image multiplied by these gains after "
              "normalisation (default: 1). 1,1.5,2 for a model trained on about five images "
              "that calls dim nuclei background: with 5 scribbled images it raised the mean "
              "IoU from 0.719 to 0.754 (8 of 9 models); with 8 it did not help, with 40 it "
              "costs ~0.02 (docs/benchmarks.md). Each gain is one more prediction")


def run(
    impl: Callable[[argparse.Namespace], int | None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, call ``impl(args)`` and turn errors into exit codes.

    Returns 0 on success, 1 for an :class:`S2LError` (printed as one line),
    2 for bad arguments (argparse's convention), 130 on Ctrl-C and 3 for an
    unexpected internal error (one line, plus ``--debug`` for the traceback).
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or usage errors (2)
        return int(exc.code or 0)
    debug = getattr(args, "debug", False)
    keep_freed_memory()  # the same results, fewer page faults (this process is ours)
    old_show = warnings.showwarning

    def show(message, category, *rest, **kw):
        """Our warnings as one line; anything else (a library's) as before."""
        if issubclass(category, S2LWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            old_show(message, category, *rest, **kw)

    try:
        with warnings.catch_warnings():
            # show every S2LWarning (one line each); leave other filters alone
            warnings.simplefilter("always", S2LWarning)
            warnings.showwarning = old_show if debug else show
            result = impl(args)
        return int(result or 0)
    except S2LError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, no traceback
        if debug:
            raise
        print(
            f"error: internal error ({type(exc).__name__}: {exc}); re-run with --debug "
            "for the traceback and report it",
            file=sys.stderr,
        )
        return 3
    finally:
        warnings.showwarning = old_show
