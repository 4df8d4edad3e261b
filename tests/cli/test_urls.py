"""Issue 26, class 4: URLs. Every option that names a path says whether it takes a URL; a local-only one given a
URL is one line (never a local folder named `s3:`), a file:// URL there is its path; a URL whose fsspec backend
is not installed is one line naming the package, for every command (not a traceback, not "damaged: delete it")."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from hairdiff.core.urls import LOCAL_ONLY, URL_OK
from tests.fixtures.cli import cli_env, invoke
from tests.fixtures.layouts import make_figaro, make_folder
from tests.fixtures.stores import TINY, make_run, make_train_store

HEAD = [f"--head={k}={v}" for k, v in TINY.items()]
URL = "s3://bucket/where"

LOCAL_ONLY_CASES = {
    "train-out": ["train", "--cache", "{tmp}/toy.zarr", "--out", URL],
    "eval-out": ["eval", "--run", "{tmp}/run", "--cache", "{tmp}/toy.zarr", "--out", URL],
    "eval-run": ["eval", "--run", URL, "--cache", "{tmp}/toy.zarr", "--out", "{tmp}/eval"],
    "predict-out": ["predict", "{tmp}/photo.png", "--run", "{tmp}/run", "--out", URL],
    "predict-image": ["predict", f"{URL}/photo.png", "--run", "{tmp}/run", "--out", "{tmp}/pred"],
    "views-out": ["cache", "views", "{tmp}/toy.zarr", "--out", URL],
    "verify-json-out": ["cache", "verify", "{tmp}/toy.zarr", "--json-out", f"{URL}/report.json"],
    "extract-root": ["extract", "--dataset", "folder", "--root", URL, "--model", "tiny"],
    "extract-report": ["extract", "--dataset", "folder", "--root", "{tmp}", "--report", f"{URL}/r.json"],
    "extract-ids": ["extract", "--dataset", "folder", "--root", "{tmp}", "--ids", f"{URL}/ids.txt"],
    "reproduce-out": ["reproduce", "--dataset", "figaro", "--root", "{tmp}", "--out", URL],
    "sweep-prompts-file": ["sweep", "--dataset", "figaro", "--root", "{tmp}", "--prompts-file", f"{URL}/p.txt"],
    "demo-out": ["demo", "--out", URL],
}


@pytest.mark.parametrize("name", list(LOCAL_ONLY_CASES))
def test_a_local_only_option_refuses_a_url_in_one_line(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a folder named "s3:" would appear
    monkeypatch.setenv("HAIRDIFF_CACHE", str(tmp_path / "home-cache"))
    make_train_store(tmp_path, n=2)
    before = set(tmp_path.rglob("*"))
    code, _, err = invoke(*[a.format(tmp=tmp_path) for a in LOCAL_ONLY_CASES[name]])
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "takes a local path, not a URL" in lines[0] and URL in lines[0], err
    assert set(tmp_path.rglob("*")) == before and not (tmp_path / "s3:").exists()


def test_a_file_url_is_taken_as_its_path(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    store = make_train_store(tmp_path, n=2)
    code, out, err = invoke("train", "--cache", f"file://{store}", "--out", f"file://{tmp_path}/run", "--iters", "1",
                            "--batch-size", "2", "--device", "cpu", "--no-small", "--workers", "0", "--no-progress",
                            *HEAD)
    assert code == 0, err
    assert out.strip().splitlines()[-1] == str(tmp_path / "run") and (tmp_path / "run" / "run.json").exists()


# A process in which s3fs is not installed, as far as it can tell: each command line runs through the real entry
# point and reports its exit status and stderr.
DRIVER = """
import contextlib, io, json, os, sys
if os.environ.pop("HIDE_S3FS", None):
    sys.modules["s3fs"] = None  # `import s3fs` fails, as without the package
from hairdiff.cli import main
results = []
for env, args in json.loads(sys.argv[1]):
    os.environ.update(env)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
            code = 0
        except SystemExit as e:
            code = e.code
    results.append({"args": args, "code": code, "err": err.getvalue()})
print(json.dumps(results))
"""


def test_without_s3fs_every_command_says_which_package_to_install(tmp_path):
    store = make_train_store(tmp_path, n=2)
    run = make_run(tmp_path)
    folder = make_folder(tmp_path / "data", stems=("a", "b"))
    figaro = make_figaro(tmp_path / "fig", "Training", frames=(1, 2, 3))
    s3 = {"HAIRDIFF_CACHE": str(tmp_path / "home-cache")}
    commands = [
        (s3, ["cache", "ls", "--cache-root", "s3://bucket/cache"]),
        (s3, ["cache", "info", "s3://bucket/x.zarr"]),
        (s3, ["cache", "verify", "s3://bucket/x.zarr"]),
        (s3, ["cache", "views", "s3://bucket/x.zarr", "--out", str(tmp_path / "views")]),
        (s3, ["cache", "push", store, "s3://bucket/cache"]),
        (s3, ["cache", "pull", "s3://bucket/x.zarr", str(tmp_path / "pulled")]),
        (s3, ["train", "--cache", "s3://bucket/x.zarr", "--out", str(tmp_path / "run2"), "--device", "cpu"]),
        (s3, ["train", "--cache", store, "--val", "s3://bucket/v.zarr", "--out", str(tmp_path / "run2"),
              "--device", "cpu"]),
        (s3, ["eval", "--run", str(run), "--cache", "s3://bucket/x.zarr", "--out", str(tmp_path / "eval")]),
        (s3, ["extract", "--dataset", "folder", "--root", str(folder), "--model", "tiny", "--cache-root",
              "s3://bucket/cache"]),
        (s3, ["reproduce", "--dataset", "figaro", "--root", str(figaro), "--model", "tiny", "--cache-root",
              "s3://bucket/cache", "--out", str(tmp_path / "rep")]),
        ({"HAIRDIFF_CACHE": "s3://bucket/cache", "XDG_CACHE_HOME": str(tmp_path / "xdg")},
         ["extract", "--dataset", "folder", "--root", str(folder), "--model", "tiny"]),
    ]
    before = {p for p in tmp_path.rglob("*")}
    for r in drive(commands, HIDE_S3FS="1"):
        lines = r["err"].strip().splitlines()
        assert r["code"] == 2 and lines and lines[-1].startswith("error: "), r
        assert "Traceback" not in r["err"] and "damaged" not in r["err"], r
        assert "s3:// URLs need the package s3fs" in lines[-1] and "pip install s3fs" in lines[-1], r
    created = {p for p in tmp_path.rglob("*") if "xdg" not in p.parts and "home-cache" not in p.parts} - before
    assert created == set(), sorted(map(str, created))


def drive(commands: list, **env) -> list[dict]:
    """Run the command lines in one process of their own (DRIVER); their exit statuses and stderr."""
    clean = {k: v for k, v in cli_env(**env).items() if not k.startswith("AWS_")}
    clean.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE=
                 "/nonexistent")  # no credentials from anywhere
    p = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(commands)], capture_output=True, text=True,
                       env=clean, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def test_without_credentials_a_url_is_one_line_naming_it_never_missing_or_damaged(tmp_path):
    store = make_train_store(tmp_path, n=2)
    folder = make_folder(tmp_path / "data", stems=("a", "b"))
    env = {"HAIRDIFF_CACHE": str(tmp_path / "home-cache"), "HAIRDIFF_MODELS": str(tmp_path / "models")}
    commands = [
        (env, ["cache", "ls", "--cache-root", "s3://bucket/cache"]),
        (env, ["cache", "push", store, "s3://bucket/cache"]),
        (env, ["cache", "verify", "s3://bucket/x.zarr"]),
        (env, ["train", "--cache", "s3://bucket/x.zarr", "--out", str(tmp_path / "run"), "--device", "cpu"]),
        (env, ["extract", "--dataset", "folder", "--root", str(folder), "--model", "tiny", "--cache-root",
               "s3://bucket/cache"]),
    ]
    for r in drive(commands):
        lines = r["err"].strip().splitlines()
        assert r["code"] == 2 and lines[-1].startswith("error: cannot ") and "s3://bucket/" in lines[-1], r
        assert "NoCredentialsError" in lines[-1] and "credentials" in lines[-1], r
        assert "Traceback" not in r["err"] and "damaged" not in r["err"] and "loading model" not in r["err"], r
    assert not (tmp_path / "models").exists()  # extract stopped before building the model


def test_every_option_naming_a_path_says_whether_it_takes_urls():
    from hairdiff.demo.run import DemoConfig
    from hairdiff.evaluate.config import EvalConfig, PredictConfig
    from hairdiff.experiments.config import ReproduceConfig, SweepConfig
    from hairdiff.extract.config import ExtractConfig
    from hairdiff.train.config import TrainConfig

    paths = {"root", "out", "cache", "val", "run", "images", "ids_file", "ids_train", "ids_test", "cache_root",
             "report", "prompts_file"}
    for cls in (ExtractConfig, TrainConfig, EvalConfig, PredictConfig, ReproduceConfig, SweepConfig, DemoConfig):
        for f in dataclasses.fields(cls):
            if f.name in paths:
                assert f.metadata.get("path") in ("local", "url"), (cls.__name__, f.name)
                assert LOCAL_ONLY in f.metadata["help"] or URL_OK in f.metadata["help"], (cls.__name__, f.name)
    code, out, _ = invoke("cache", "push", "--help")
    assert code == 0 and "s3://" in out
