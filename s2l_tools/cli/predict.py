"""``s2l-predict``: the command line of :mod:`s2l_tools.inference.predict`."""

from s2l_tools.inference.predict import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
