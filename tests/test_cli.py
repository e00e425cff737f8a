"""Tests for tfcxr.cli: one --log-level convention, user errors as one line with exit code 2."""

import argparse
import logging

import pytest

from tfcxr import cli


def parser():
    return cli.add_log_level(argparse.ArgumentParser(prog="tool"))


def test_log_level_flag_and_verbose_shorthand():
    assert parser().parse_args([]).log_level == "INFO"
    assert parser().parse_args(["--log-level", "warning"]).log_level == "WARNING"
    assert parser().parse_args(["-v"]).log_level == "DEBUG"
    with pytest.raises(SystemExit):
        parser().parse_args(["--log-level", "LOUD"])


def test_user_errors_are_one_line_with_exit_code_2(caplog):
    logger = logging.getLogger("tool")

    def missing(_):
        raise FileNotFoundError("/data/x.png: not found")

    def bad_value(_):
        raise ValueError("`mask` must be one of (...). Received: mask='lose'")

    for body, text in ((missing, "/data/x.png: not found"), (bad_value, "mask='lose'")):
        caplog.clear()
        assert cli.run(body, parser().parse_args([]), logger) == 2
        records = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(records) == 1 and text in records[0].getMessage() and not records[0].exc_info
    assert cli.run(lambda _: None, parser().parse_args([]), logger) == 0
    assert cli.run(lambda _: 1, parser().parse_args([]), logger) == 1


def test_internal_errors_keep_their_traceback():
    def broken(_):
        raise KeyError("internal")

    with pytest.raises(KeyError):
        cli.run(broken, parser().parse_args([]), logging.getLogger("tool"))


@pytest.mark.parametrize("module", ["tfcxr.train", "tfcxr.experiment", "tfcxr.pretrain", "tfcxr.evaluate",
                                    "tfcxr.data.synthetic", "tfcxr.segment.predict", "tfcxr.segment.build_preset",
                                    "tfcxr.segment.finetune", "tfcxr.segment.evaluate", "tfcxr.segment.average",
                                    "tfcxr.export.__main__", "tfcxr.serving.client"])
def test_every_converted_cli_has_the_log_level_flag(module):
    import importlib

    actions = {a.dest for a in importlib.import_module(module).build_parser()._actions}
    assert "log_level" in actions
