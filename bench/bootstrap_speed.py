"""The bootstrap of evaluate/bootstrap.py on one CPU core: 10,000 resamples of N test images, every metric.

Target (issue 25): 10,000 resamples of 2,000 images in under 1 s on one core. Per-image confusion matrices
and boundary counts are synthetic (the bootstrap's cost does not depend on their values); the row's time is
the best of --repeats, on the wall clock and on the process's CPU clock (the latter is what other jobs on a
shared machine inflate least). BLAS and OpenMP are held to one thread before numpy loads.

    python bench/bootstrap_speed.py                 # N = 148 (our Figaro split), 210 (Figaro's test), 2000
    python bench/bootstrap_speed.py --images 2000 --repeats 5
"""
from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"  # one core: before numpy is imported

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from report import RESULTS, checkout_on_path, table, write  # noqa: E402

checkout_on_path()
from hairdiff.evaluate.bootstrap import RESAMPLES, ImageScores, intervals, paired_intervals  # noqa: E402

TARGET_S = 1.0


def synthetic(n: int, seed: int) -> ImageScores:
    rng = np.random.default_rng(seed)
    conf = rng.integers(0, 50_000, (n, 2, 2))
    bnd = rng.integers(0, 500, (n, 4))
    bnd[:, 0] = np.minimum(bnd[:, 0], bnd[:, 1])
    bnd[:, 2] = np.minimum(bnd[:, 2], bnd[:, 3])
    return ImageScores(conf, bnd)


def best_of(repeats: int, fn) -> tuple[float, float]:
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", default="148,210,2000")
    ap.add_argument("--resamples", type=int, default=RESAMPLES)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for bootstrap_speed.json")
    a = ap.parse_args()
    rows = []
    for n in (int(v) for v in a.images.split(",")):
        s, other = synthetic(n, 0), synthetic(n, 1)
        for kind, fn in (("intervals", lambda: intervals(s, resamples=a.resamples)),
                         ("paired (compare)", lambda: paired_intervals(s, other, resamples=a.resamples))):
            wall, cpu = best_of(a.repeats, fn)
            rows.append({"kind": kind, "images": n, "resamples": a.resamples, "wall_s": wall, "cpu_s": cpu,
                         "target_s": TARGET_S if kind == "intervals" and n == 2000 else None})
    load = os.getloadavg()
    table(f"bootstrap on one core: every pooled and per-image metric (load average {load[0]:.1f})", rows,
          [("what", "kind", ""), ("images", "images", "d"), ("resamples", "resamples", ","),
           ("wall s", "wall_s", ".3f"), ("CPU s", "cpu_s", ".3f"), ("target s", "target_s", ".1f")])
    print(write("bootstrap_speed", rows, {"load_average": load, "threads": 1}, out=a.out))


if __name__ == "__main__":
    main()
