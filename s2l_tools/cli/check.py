"""``s2l-check``: the command line of :mod:`s2l_tools.data.dataset`."""

from s2l_tools.data.dataset import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
