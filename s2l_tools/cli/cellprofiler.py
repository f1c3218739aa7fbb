"""``s2l-cellprofiler``: the command line of :mod:`s2l_tools.interop.cellprofiler`."""

from s2l_tools.interop.cellprofiler import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
