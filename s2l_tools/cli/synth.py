"""``s2l-synth``: the command line of :mod:`s2l_tools.data.synth`."""

from s2l_tools.data.synth import get_parser, main

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
