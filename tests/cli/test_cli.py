"""The command line as a whole: every command mounted with --help, --version, and the one error policy."""
from __future__ import annotations

import pytest

from tests.fixtures.cli import invoke, run_pipeline

COMMANDS = ("extract", "train", "eval", "predict", "compare", "export", "serve", "reproduce", "demo", "cache")


def test_help_lists_every_command_and_each_has_help():
    code, out, _ = invoke("--help")
    assert code == 0 and all(c in out for c in COMMANDS)
    for c in COMMANDS:
        code, out, err = invoke(c, "--help")
        assert code == 0 and "Usage" in out, (c, err)


def test_version():
    code, out, _ = invoke("--version")
    assert code == 0 and out.startswith("hairdiff ")


@pytest.mark.parametrize("args,names", [
    (["extract", "--dataset", "figaro", "--root", ".", "--precision", "bogus"], ["--precision", "bogus"]),
    (["extract", "--dataset", "figaro", "--root", ".", "--dtype", "bogus"], ["--dtype", "bogus"]),
    (["extract", "--dataset", "nope", "--root", "."], ["--dataset", "nope"]),
    (["train", "--cache", "x.zarr", "--out", "r", "--head", "num_querys=5"], ["num_querys", "num_queries"]),
    (["extract", "--bogus-option", "1"], ["--bogus-option"]),
    (["train", "--cache", "x.zarr", "--out", "r", "--head", "ignore_pixels=sometimes"], ["ignore_pixels", "negative"]),
    (["compare", "only-one", "--out", "c"], ["pipeline compare", "two or more"]),
    (["compare", "a", "b", "--out", "c", "--resamples", "5"], ["--resamples 5"]),
    (["compare", "no-such-eval", "b", "--out", "c"], ["no-such-eval", "pipeline eval"]),
])
def test_a_bad_option_is_one_line_and_exit_2(args, names, tmp_path):
    code, out, err = invoke(*args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for n in names:
        assert n in lines[0], lines[0]


def test_console_entry_point_subprocess(tmp_path):
    # The same policy when run as a user runs it: a subprocess, nothing loaded before the error.
    p = run_pipeline("extract", "--dataset", "figaro", "--root", tmp_path, "--precision", "bogus", check=False,
                     cache_root=tmp_path / "c")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "c").exists()
