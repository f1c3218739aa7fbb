"""``s2l-scribbles``: the command line of :mod:`s2l_tools.data.scribbles`."""

from s2l_tools.data.scribbles import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
