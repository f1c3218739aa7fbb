"""``s2l-eval``: the command line of :mod:`s2l_tools.evaluation.evaluate`."""

from s2l_tools.evaluation.evaluate import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
