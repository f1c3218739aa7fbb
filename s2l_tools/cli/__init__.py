"""The command-line tools: argument parsing and ``main`` of each ``s2l-*`` command;
the work is done by the library modules they call."""
