"""Issue 26, class 8: a Dask scheduler that cannot be reached is one line naming the address and how long it
was waited for (exit 2), for `extract` and `sweep` alike; a connection lost mid-run is one line too (exit 1)."""
from __future__ import annotations

import dask
import pytest

from hairdiff.core.errors import ClusterError
from tests.fixtures.cli import invoke
from tests.fixtures.layouts import make_figaro

REFUSING = "tcp://127.0.0.1:9"  # the discard port: nothing listens there


@pytest.fixture()
def short_wait():
    import distributed  # noqa: F401  (first: its defaults join dask's config, which the `set` below restores)

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        yield


@pytest.mark.parametrize("command", ["extract", "sweep"])
def test_an_unreachable_scheduler_is_one_line_with_the_address_and_the_timeout(command, tmp_path, monkeypatch,
                                                                               short_wait):
    monkeypatch.setenv("HAIRDIFF_CACHE", str(tmp_path / "home-cache"))
    root = make_figaro(tmp_path / "fig", "Training", frames=(1, 2, 3))
    args = (["extract", "--dataset", "figaro", "--root", root] if command == "extract" else
            ["sweep", "--dataset", "figaro", "--root", root, "--out", tmp_path / "sw", "--iters", "1"])
    code, _, err = invoke(*args, "--model", "tiny", "--cache-root", tmp_path / "cache", "--scheduler", REFUSING)
    errors = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert code == 2 and errors == [err.strip().splitlines()[-1]] and "Traceback" not in err, err
    assert f"--scheduler {REFUSING}: no Dask scheduler answered within 1s" in errors[0]
    assert not (tmp_path / "cache").exists()  # no store was made


def test_a_scheduler_lost_mid_run_is_one_line_and_keeps_what_was_written():
    from distributed.comm.core import CommClosedError

    from hairdiff.extract.distributed import _scheduler_kept

    with pytest.raises(ClusterError, match="lost mid-run .* every shard written so far is kept") as e:
        with _scheduler_kept(REFUSING):
            raise CommClosedError("in <TCP (closed)>: Stream is closed")
    assert e.value.exit_code == 1


def test_local_workers_are_bounded():
    code, _, err = invoke("extract", "--dataset", "figaro", "--root", ".", "--scheduler", "local:100000")
    assert code == 2 and "local:N with N at most" in err
