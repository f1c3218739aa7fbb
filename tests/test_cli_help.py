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


def _parsers(parser):
    """A parser and the parsers of its subcommands."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_shows_each_default_once_with_its_value(name):
    """No "(default: None)" or "(default: [])", and no default said twice (issue 17)."""
    module = importlib.import_module(SCRIPTS[name].split(":")[0])
    for parser in _parsers(module.get_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.help:
                continue
            text = formatter._expand_help(action)
            assert text.lower().count("default") <= 1, (name, action.option_strings, text)
            for empty in ("default: None)", "default: [])", "default: ()", "default: )"):
                assert empty not in text, (name, action.option_strings, text)


def test_train_and_predict_thresholds_have_distinct_names():
    """s2l-train's consistency tau is --consistency-threshold (--threshold still accepted);
    s2l-predict's --threshold is a probability."""
    from s2l_tools.cli import train

    parser = train.get_parser()
    assert parser.parse_args(["--consistency-threshold", "0.9"]).threshold == 0.9
    assert parser.parse_args(["--threshold", "0.95"]).threshold == 0.95  # the old name
    help_text = " ".join(parser.format_help().split())
    assert "--consistency-threshold X, --threshold X" in help_text
    assert "--threshold is the old name" in help_text


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_every_subcommand_has_an_example(name):
    """`s2l-cellprofiler pipeline --help` shows an example too, not only the top level."""
    module = importlib.import_module(SCRIPTS[name].split(":")[0])
    for parser in _parsers(module.get_parser()):
        text = parser.format_help()
        assert "example:" in text and parser.prog.split()[0] in text, parser.prog
