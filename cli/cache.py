"""`pipeline cache ls | info | verify | views | push | pull`.

Output is plain lines, never a rich table: tables cut long cells with "…", and paths and URLs are what a
user copies from here.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from hairdiff.core.urls import LOCAL_ONLY, URL_OK

app = typer.Typer(help="Inspect, verify and copy feature stores.", no_args_is_help=True)
SHOW_IDS = 20  # sample ids named per line before "and N more"

DEST_HELP = ("a cache root: the store lands at DEST/<dataset>/<split>/<fingerprint16>.zarr, where --cache-root "
             "finds it; or a path ending in .zarr: the store lands exactly there. STORE, URL and DEST: "
             f"{URL_OK}")


def _columns(rows: list[list[str]]) -> list[str]:
    """Left-aligned columns; the last one (a path or URL) is never padded or cut."""
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    return ["  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]) for r in rows]


def _some(ids: list[str]) -> str:
    more = len(ids) - SHOW_IDS
    return ", ".join(ids[:SHOW_IDS]) + (f" and {more} more" if more > 0 else "")


@app.command("ls")
def ls_command(cache_root: Annotated[Optional[str], typer.Option(help="default $HAIRDIFF_CACHE, else "
                                                                      f"~/.cache/hairdiff [{URL_OK}]")] = None,
               json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the stores under a cache root (a folder or a URL), with their full paths."""
    from hairdiff.cache import FeatureStore, default_cache_root, list_stores
    from hairdiff.core.urls import remote_access, require_backend

    root = str(cache_root or default_cache_root())
    require_backend(root, "--cache-root")
    rows = []
    with remote_access(root, "list the cache root"):
        urls = list_stores(root)
    for url in urls:
        try:
            s = FeatureStore.open(url)
        except Exception as e:  # one unreadable store must not hide the others
            rows.append({"url": url, "error": str(e)})
            continue
        rows.append({"dataset": s.dataset, "split": s.split, "fingerprint": s.fingerprint[:16],
                     "done": int(s.done_mask().sum()), "num_samples": s.num_samples, "bytes": s.nbytes(), "url": url})
    if json_:
        print(json.dumps({"root": root, "stores": rows}, indent=2))
        return
    if not rows:
        print(f"no feature stores under {root} (pass --cache-root to list another root)")
        return
    print(f"{len(rows)} feature store(s) under {root}:")
    table = [["dataset", "split", "fingerprint", "done/N", "MB", "path"]]
    for r in rows:
        if "error" in r:
            table.append(["?", "?", "?", "?", "?", f"{r['url']} (unreadable: {r['error']})"])
        else:
            table.append([r["dataset"], r["split"], r["fingerprint"], f"{r['done']}/{r['num_samples']}",
                          f"{r['bytes'] / 1e6:.1f}", r["url"]])
    print("\n".join(_columns(table)))


@app.command("info")
def info_command(store: Annotated[str, typer.Argument(help=f"a feature store [{URL_OK}]")],
                 json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Show a store's full path, dataset, fingerprint inputs, levels, progress and size."""
    from hairdiff.cache import FeatureStore

    info = FeatureStore.open(store).info()
    if json_:
        print(json.dumps(info, indent=2, default=str))
        return
    for k in ("url", "root", "dataset", "split", "fingerprint", "num_samples", "done", "resolution", "precision",
              "codec", "shard_size", "bytes", "created"):
        print(f"{k}: {info[k]}")
    for lv in info["levels"]:
        print(f"level {lv['name']}: {lv['channels']}x{lv['height']}x{lv['width']} stride {lv['stride']}")
    for k, v in info["fingerprint_inputs"].items():
        print(f"fp.{k}: {json.dumps(v, default=str)}")


@app.command("views")
def views_command(
        store: Annotated[str, typer.Argument(help=f"a feature store [{URL_OK}]")],
        out: Annotated[str, typer.Option(help="folder for the pictures (one PNG per image) and views.json "
                                              f"[{LOCAL_ONLY}]")] = "views",
        images: Annotated[int, typer.Option(help="how many images (the first ones whose views are all extracted)")] = 4,
) -> None:
    """Picture a store's views: for each image, every view in the original's frame with the label the store
    holds tinted on it (hair green, ignore grey) and the hair's share of the frame; see that `--views`
    does what it says (at scale:0.5 the hair covers a quarter of the original's share)."""
    from hairdiff.cache import FeatureStore
    from hairdiff.cache.distinct import check_distinct
    from hairdiff.cli.progress import rich_progress
    from hairdiff.core.errors import NotAsStoredError, UsageError
    from hairdiff.core.paths import check_output_dir
    from hairdiff.core.urls import local_option, require_backend
    from hairdiff.evaluate.view_sheet import view_sheet

    if images < 1:
        raise UsageError(f"--images {images}: use 1 or more")
    out_dir = Path(local_option(out, "--out"))
    require_backend(store, "STORE")
    check_output_dir(out_dir, "--out")
    check_distinct(outputs={"--out": out_dir})
    s = FeatureStore.open(store)
    report = view_sheet(s, out_dir, images, progress=rich_progress)
    if not report["images"]:
        print(f"{s.url}: no image has all its views extracted yet; nothing drawn")
        return
    if s.layout.recipe is None:
        print(f"{s.url} holds no views (extracted without --views): the originals alone are drawn")
    for row in report["samples"]:
        ratio = row["ratio_to_original"]
        print(f"{row['id']}: hair {row['hair_fraction']:.2%} of the frame"
              + (f", {ratio:.2f}x the original's" if ratio is not None and row["view"] != "original" else "")
              + ("" if row["photo_drawn"] else " (stored label only, no photo)"))
    print(f"{report['source']}; pictures and views.json in {out_dir}")
    problems = report["problems"]
    if problems:
        for line in problems[:SHOW_IDS]:
            print(f"warning: {line}", file=sys.stderr)
        if len(problems) > SHOW_IDS:
            print(f"warning: and {len(problems) - SHOW_IDS} more (views.json lists them)", file=sys.stderr)
        missing = sum(not r["photo_drawn"] for r in report["samples"])
        raise NotAsStoredError(f"{missing} of {len(report['samples'])} panels of {s.url} are drawn without their "
                               f"photo, which cannot be shown as the store holds it ({problems[0]}); the stored "
                               f"labels are drawn, and {out_dir / 'views.json'} lists why")


@app.command("verify")
def verify_command(store: Annotated[str, typer.Argument(help=f"a feature store [{URL_OK}]")],
                   complete: Annotated[bool, typer.Option(help="also fail (exit 1) when samples are not "
                                                               "extracted yet")] = False,
                   repair: Annotated[bool, typer.Option(help="clear the done flags of the corrupt samples, so "
                                                             "the same `pipeline extract` command recomputes "
                                                             "exactly those; a store written before per-sample "
                                                             "digests also gets them")] = False,
                   json_out: Annotated[Optional[str], typer.Option(help=f"also write the report here [{LOCAL_ONLY}]")]
                   = None,
                   json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Read every sample flagged done and name each corrupt one (absent, failing its checksum, non-finite).

    Exit 0 for a healthy store, partial ones included (made with --limit, or interrupted): samples not
    extracted yet are counted, not errors, unless --complete. Exit 1 for corrupt samples (after --repair,
    which turns them into samples not extracted yet: exit 0), and for a damaged store: a zarr.json missing or
    undecodable, or attributes that disagree with each other or with the store's name (the fingerprint is
    recomputed from its inputs), which --repair does not mend.
    """
    from hairdiff.cache.verify import damaged_report, open_checked, verify
    from hairdiff.cache.verify import repair as repair_store
    from hairdiff.core.errors import StoreWriteError, VerifyError
    from hairdiff.core.urls import local_option

    json_out = Path(local_option(json_out, "--json-out")) if json_out else None
    st, damaged = open_checked(store, mode="r+" if repair else "r")
    report = verify(st) if st is not None else damaged_report(store, damaged)
    if repair and st is not None:
        try:
            report["repaired"] = [{"index": i, "id": st.ids[i]} for i in repair_store(st, report)]
            if not report["damaged"]:  # a store written before digests gets them (of what it holds now)
                report["digests_added"] = st.add_digests()
        except OSError as e:  # a read-only or full filesystem
            raise StoreWriteError(f"cannot repair {st.url} ({e.strerror or e}): no done sample was lost (a flag "
                                  f"cleared before the failure only makes extract recompute that sample); make "
                                  f"the store writable and run the same command again") from None
    if json_out:
        json_out.write_text(json.dumps(report, indent=2))
    if json_:
        print(json.dumps(report, indent=2))
    else:
        _print_report(report)
    if report["damaged"]:
        files = sorted({d["file"] for d in report["damaged"]})
        raise VerifyError(f"{store} is damaged ({len(report['damaged'])} problem(s) in {', '.join(files)}, listed "
                          f"above): its metadata cannot be trusted, and --repair does not mend it. Fix: delete the "
                          f"store and run the `pipeline extract` command that made it again, or copy a good copy "
                          f"back (`pipeline cache pull`)")
    if report["corrupt"] and not repair:
        raise VerifyError(f"{len(report['corrupt'])} corrupt sample(s) in {st.url} (flagged done but absent or "
                          f"unreadable): run `pipeline cache verify {store} --repair` to clear their done flags, "
                          f"then the same `pipeline extract` command to recompute them")
    missing = len(report["not_extracted"]) + len(report.get("repaired", []))
    if complete and missing:
        raise VerifyError(f"--complete: {missing} of {report['num_samples']} samples in {st.url} are not "
                          f"extracted yet: run the `pipeline extract` command without --limit to compute them")


def _print_report(report: dict) -> None:
    if report["num_samples"] is None:
        print(f"{report['url']}: damaged, none of its samples could be read")
    else:
        print(f"{report['url']}: {report['readable']} of {report['num_samples']} samples done and readable, "
              f"{len(report['not_extracted'])} not extracted yet, {len(report['corrupt'])} corrupt"
              + (f", {len(report['damaged'])} metadata problem(s)" if report.get("damaged") else ""))
    if report.get("digests") is False and "digests_added" in report:
        print(f"added per-sample digests: {report['digests_added']} done sample(s) recorded as they are now; from "
              "here on every read checks them")
    elif report.get("digests") is False:
        print(f"note: {report['url']} predates per-sample digests: its reads check that shard files exist, not "
              f"their content, so a shard swapped for another valid one reads without an error; `pipeline cache "
              f"verify {report['url']} --repair` adds them (recording the samples as they are now)")
    for d in report.get("damaged", []):
        print(f"damaged: {d['file']}: {d['problem']}")
    for r in report["corrupt"]:
        print(f"corrupt: sample {r['index']} ({r['id']}): {'; '.join(r['problems'])}")
    if report.get("repaired"):
        print(f"repaired: cleared the done flags of {len(report['repaired'])} corrupt sample(s) "
              f"({_some([r['id'] for r in report['repaired']])}); run the same `pipeline extract` command again "
              f"to recompute exactly those")


def _transfer(src: str, dest: str) -> None:
    from hairdiff.cache.transfer import transfer
    from hairdiff.core.errors import StoreWriteError, VerifyError
    from hairdiff.core.paths import check_output_dir
    from hairdiff.core.urls import is_remote, local_path, remote_access, require_backend

    require_backend(src, "the source")
    require_backend(dest, "DEST")
    if not is_remote(dest):
        check_output_dir(local_path(dest), "DEST")
    try:
        with remote_access(src, "copy from"), remote_access(dest, "copy to"):
            target, report = transfer(src, dest)
    except OSError as e:  # a full disk, a read-only or unreachable destination
        raise StoreWriteError(f"copying {src} to {dest} failed ({e.strerror or e}): the source is unchanged; free "
                              f"space or pass another DEST, and run the same command again") from None
    _print_report(report)
    if report["corrupt"] or report.get("damaged"):
        what = (f"{len(report['corrupt'])} corrupt sample(s)" if report["corrupt"] else
                f"{len(report['damaged'])} metadata problem(s)")
        raise VerifyError(f"the copy at {target} has {what}, listed above: check the source with "
                          f"`pipeline cache verify {src}`")
    print(target)  # last: the path to pass as --cache


@app.command("push", help=f"Copy a store whole to DEST and verify the copy; prints where it landed last. "
                          f"DEST: {DEST_HELP} (e.g. s3://bucket/hair-cache).")
def push_command(store: str, dest: str) -> None:
    _transfer(store, dest)


@app.command("pull", help=f"Copy a store whole from URL to DEST and verify the copy; prints where it landed "
                          f"last. DEST: {DEST_HELP}.")
def pull_command(url: str, dest: str) -> None:
    _transfer(url, dest)
