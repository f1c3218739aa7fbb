"""``s2l-export``: the command line of :mod:`s2l_tools.inference.export`."""

from s2l_tools.inference.export import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
