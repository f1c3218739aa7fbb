"""Every console script has --help with an example, and exits 2 on bad flags."""

import importlib
import tomllib
from pathlib import Path

import pytest

SCRIPTS = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())[
    "project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_has_example(name, capsys):
    module, func = SCRIPTS[name].split(":")
    main = getattr(importlib.import_module(module), func)
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "example" in out and name in out
    assert main(["--no-such-flag"]) == 2
