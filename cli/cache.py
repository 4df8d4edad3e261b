"""`pipeline cache ls | info | verify | push | pull`."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Inspect, verify and copy feature stores.", no_args_is_help=True)
out = Console(soft_wrap=True)  # full paths and URLs, never cut


@app.command("ls")
def ls_command(cache_root: Annotated[Optional[str], typer.Option(help="default $HAIRDIFF_CACHE")] = None,
               json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the stores under a cache root."""
    from hairdiff.cache import FeatureStore, default_cache_root, list_stores

    rows = []
    for url in list_stores(cache_root or default_cache_root()):
        try:
            s = FeatureStore.open(url)
        except Exception as e:
            rows.append({"url": url, "error": str(e)})
            continue
        rows.append({"dataset": s.dataset, "split": s.split, "fingerprint": s.fingerprint[:16],
                     "done": int(s.done_mask().sum()), "num_samples": s.num_samples, "bytes": s.nbytes(), "url": url})
    if json_:
        print(json.dumps(rows, indent=2))
        return
    t = Table("dataset", "split", "fingerprint", "done/N", "MB", "url")
    for r in rows:
        if "error" in r:
            t.add_row("?", "?", "?", "?", "?", f"{r['url']} ({r['error']})")
        else:
            t.add_row(r["dataset"], r["split"], r["fingerprint"], f"{r['done']}/{r['num_samples']}",
                      f"{r['bytes'] / 1e6:.1f}", r["url"])
    out.print(t)


@app.command("info")
def info_command(store: str, json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Show a store's dataset, fingerprint inputs, levels, progress and size."""
    from hairdiff.cache import FeatureStore

    info = FeatureStore.open(store).info()
    if json_:
        print(json.dumps(info, indent=2, default=str))
        return
    t = Table("field", "value", show_header=False)
    for k in ("url", "dataset", "split", "fingerprint", "num_samples", "done", "resolution", "precision",
              "shard_size", "bytes", "created"):
        t.add_row(k, str(info[k]))
    for lv in info["levels"]:
        t.add_row(f"level {lv['name']}", f"{lv['channels']}x{lv['height']}x{lv['width']} stride {lv['stride']}")
    for k, v in info["fingerprint_inputs"].items():
        t.add_row(f"fp.{k}", json.dumps(v, default=str)[:120])
    out.print(t)


@app.command("verify")
def verify_command(store: str,
                   json_out: Annotated[Optional[Path], typer.Option(help="also write the report here")] = None,
                   json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Read every chunk; name each sample whose data is corrupt or missing. Exit 1 if any."""
    from hairdiff.cache import FeatureStore
    from hairdiff.cache.verify import verify

    report = verify(FeatureStore.open(store))
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
    if json_:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if report["corrupt"] or report["missing"]:
        raise typer.Exit(1)


def _print_report(report: dict) -> None:
    out.print(f"{report['url']}: {report['done']}/{report['num_samples']} samples done, "
              f"{len(report['corrupt'])} corrupt, {len(report['missing'])} missing")
    if report["corrupt"]:
        t = Table("index", "id", "problem")
        for r in report["corrupt"]:
            t.add_row(str(r["index"]), r["id"], "; ".join(r["problems"]))
        out.print(t)
    if report["missing"]:
        ids = ", ".join(r["id"] for r in report["missing"][:20])
        more = len(report["missing"]) - 20
        out.print(f"missing: {ids}" + (f" ... and {more} more" if more > 0 else ""))


@app.command("push")
def push_command(store: str, url: str) -> None:
    """Copy a store whole to URL (e.g. s3://bucket/prefix/store.zarr) and verify the copy."""
    from hairdiff.cache.transfer import push

    report = push(store, url)
    _print_report(report)
    print(url)
    if not report["ok"]:
        sys.exit(1)


@app.command("pull")
def pull_command(url: str, dest: Path) -> None:
    """Copy a store whole from URL into DEST and verify the copy."""
    from hairdiff.cache.transfer import pull

    report = pull(url, str(dest))
    _print_report(report)
    print(dest)
    if not report["ok"]:
        sys.exit(1)
