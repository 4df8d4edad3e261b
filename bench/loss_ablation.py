"""Two loss ablations on shared Figaro data: Mask2Former's normalisation beside the per-image one it replaced,
and Mask2Former's ignore handling (ignore pixels are negatives) beside ours (they carry no loss).

The setting of the views ablation (BENCHMARKS.md): Figaro-1k `Training`, the tiny random-weight model at 256,
the first 600 ids (in id order) for training and the other 148 for validation, the small head, batch 8, seed 0,
validation every 50 iterations; plus crops (`--crop`, default the recipe's 3/4 of the side, 192 at 256). The two
normalisations differ only on batches whose images hold different numbers of masks: at 192 every Figaro crop
holds hair and background (measured: 0 of 5,400 windows hold one class), so there they are the same loss up to
rounding and the runs differ only by how rounding grows over 400 iterations: a measure of run-to-run noise.
`--crop 96` makes batches mixed (15% of the windows hold one class; 3 in 4 batches of 8 hold such a crop).
Runs:

- `new`: this checkout (Mask2Former's normalisation, ignore pixels skipped: the default);
- `negative`: this checkout with `--head ignore_pixels=negative` (Mask2Former's ignore handling);
- `old`: the per-image normalisation, run from a checkout of the commit before it (`--old-checkout DIR`,
  made with `git archive 470fcc5 | tar -x -C DIR`), on the same stores, with the same command.

Each run's validation mIoU (pooled, `pipeline eval`'s scoring) per 50 iterations is the table; the stores and
runs are reused when present (the same command again only reads them back). Random weights: only the
comparison between rows means anything.

    git archive 470fcc5 | tar -x -C /tmp/hairdiff-470fcc5    # the per-image normalisation, for the `old` run
    nice -n 10 python bench/loss_ablation.py --work /tmp/ablation --old-checkout /tmp/hairdiff-470fcc5
    nice -n 10 python bench/loss_ablation.py --work /tmp/ablation --old-checkout /tmp/hairdiff-470fcc5 \
        --crop 96 --runs new,old --name loss_ablation_crop96
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from report import RESULTS, checkout_on_path, table, write

checkout_on_path()
from hairdiff.extract.readers.registry import get_reader  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RUNS = {"new": ([], "Mask2Former's normalisation, ignore pixels skipped (ours)"),
        "negative": (["--head", "ignore_pixels=negative"], "Mask2Former's normalisation, ignore pixels negative"),
        "old": ([], "per-image normalisation (470fcc5), ignore pixels skipped")}


def pipeline(checkout: Path, *args, env: dict) -> str:
    """Run `python CHECKOUT/pipeline.py ARGS`; its last line of stdout (the result's path)."""
    cmd = [sys.executable, str(checkout / "pipeline.py"), *map(str, args)]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return done.stdout.strip().splitlines()[-1]


def split_ids(root: Path, work: Path, n_train: int) -> tuple[Path, Path]:
    ids = sorted(r.id for r in get_reader("figaro").list_samples(root, "Training"))
    files = work / "train_ids.txt", work / "val_ids.txt"
    for f, part in zip(files, (ids[:n_train], ids[n_train:])):
        f.write_text("".join(i + "\n" for i in part))
    return files


def val_curve(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return {r["iter"]: r["val_mIoU"] for r in rows if "val_mIoU" in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=REPO.parent / "shared/data/figaro1k/Figaro1k")
    ap.add_argument("--work", type=Path, required=True, help="stores, ids files and runs")
    ap.add_argument("--old-checkout", type=Path, help="a checkout of 470fcc5 for the `old` run")
    ap.add_argument("--checkout", type=Path, default=REPO, help="the checkout of the `new` and `negative` runs "
                                                                 "(default: this one)")
    ap.add_argument("--runs", default="new,old,negative")
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--crop", type=int, default=192)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--val-every", type=int, default=50)
    ap.add_argument("--name", default="loss_ablation", help="the results file: OUT/NAME.json")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HAIRDIFF_MODELS": str(a.work / "models"), "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    train_ids, val_ids = split_ids(a.root, a.work, a.train)
    stores = {part: pipeline(REPO, "extract", "--dataset", "figaro", "--root", a.root, "--split", "Training",
                             "--ids", ids, "--model", "tiny", "--resolution", a.resolution, "--cache-root",
                             a.work / "cache", "--workers", 0, env=env)
              for part, ids in (("train", train_ids), ("val", val_ids))}
    rows = []
    for name in a.runs.split(","):
        extra, what = RUNS[name]
        checkout = a.old_checkout if name == "old" else a.checkout
        if checkout is None:
            raise SystemExit("--old-checkout DIR: a checkout of 470fcc5 (git archive 470fcc5 | tar -x -C DIR)")
        run = a.work / (f"run-{name}" if a.crop == 192 else f"run-{name}-crop{a.crop}")
        resume = ["--resume"] if run.exists() else []
        started = time.time()
        pipeline(checkout, "train", "--cache", stores["train"], "--val", stores["val"], "--out", run, "--iters",
                 a.iters, "--batch-size", a.batch_size, "--crop", a.crop, "--val-every", a.val_every, "--seed", 0,
                 "--device", "cpu", "--small", "--ckpt-every", a.val_every, "--no-progress", *extra, *resume, env=env)
        curve = val_curve(run)
        best = max(curve, key=curve.get)
        rows.append({"run": name, "what": what, "val_mIoU": curve, "best_iteration": best, "best": curve[best],
                     "final": curve[max(curve)], "seconds": round(time.time() - started, 1),
                     "setting": {k: getattr(a, k) for k in ("train", "resolution", "crop", "iters", "batch_size")}})
    iters = sorted({i for r in rows for i in r["val_mIoU"]})
    columns = [("run", "run", ""), *[(str(i), f"it{i}", ".2f") for i in iters], ("best", "best", ".2f"),
               ("best at", "best_iteration", "d")]
    table(f"validation mIoU (pooled, 148 Figaro images, crops {a.crop}; tiny random-weight model: comparisons only)",
          [{**r, **{f"it{i}": v for i, v in r["val_mIoU"].items()}} for r in rows], columns)
    load = os.getloadavg()
    path = write(a.name, rows, {"stores": stores, "load_average": load, "seconds": round(time.time() - t0)}, out=a.out)
    print(path)


if __name__ == "__main__":
    main()
