"""`pipeline sweep`: the grid of timesteps x prompts x tap sets, end to end and resumable; sweep.md's path last.

`--prompts` takes several values after one flag (`--prompts "A photo of a hair." ""`), which an option of the
parser cannot: `spread_values` rewrites the command line into one `--prompts VALUE` per value before parsing.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from hairdiff.cli.progress import err, rich_progress
from hairdiff.experiments.config import SweepConfig

MULTI_VALUE = ("--prompts",)  # options that take every value up to the next option


def spread_values(argv: list[str]) -> list[str]:
    """For `pipeline sweep`, `--prompts A B` -> `--prompts A --prompts B`: the values run up to the next token starting with '-'
    (a prompt that starts with '-' is passed as `--prompts=-...`). Other tokens are kept as they are."""
    if argv[:1] != ["sweep"]:
        return argv
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        out.append(token)
        i += 1
        if token in MULTI_VALUE:
            values = []
            while i < len(argv) and not (argv[i].startswith("-") and len(argv[i]) > 1):
                values.append(argv[i])
                i += 1
            if not values:
                continue  # the parser names the missing value
            out.append(values[0])
            for v in values[1:]:
                out += [token, v]
    return out


def sweep(cfg: SweepConfig) -> None:
    """Try every timestep x prompt x tap set of a grid: extract (reusing stores), train and score each point.

    Everything but the grid is shared by all points: the recipe of `pipeline reproduce` (printed with its
    sources), with --iters, --limit and --views overrides, and the same seed. Writes OUT/sweep.json (a row per
    point: settings, stores, run, metrics pooled and per-image, seconds per stage, what was reused), OUT/sweep.md
    (the table, best point marked), OUT/sweep.png (mIoU and hair IoU against the timestep) and
    OUT/points/NAME/{run,eval}. Running the same command again reads finished points back and continues the
    others from their stores and checkpoints; points may be added to the grid, other shared settings are refused.
    With --scheduler the points' stores are extracted on a Dask cluster.
    """
    from hairdiff.experiments.sweep import sweep as run

    command = "`" + " ".join(["pipeline", *map(shlex.quote, sys.argv[1:])]) + "`" if sys.argv[1:2] == ["sweep"] \
        else "the same command"
    rep = run(cfg, progress=rich_progress, log=lambda message: err.print(message, markup=False, highlight=False),
              command=command)
    best = next((r for r in rep["points"] if r["name"] == rep["best"]), None)
    if best is not None:
        m = best["metrics"]
        err.print(f"best of {rep['finished']} points: timestep {best['timestep']}, prompt {best['prompt']!r}, taps "
                  f"{best['taps']}: mIoU {m['mIoU']:.2f}, hair IoU {m['hair_iou']:.2f} ({rep['seconds']} s)",
                  markup=False, highlight=False)
    pending = rep["total"] - rep["finished"] - len(rep["diverged"])
    if pending:
        err.print(f"{pending} of {rep['total']} points not computed yet: run the same command again to continue",
                  markup=False, highlight=False)
    print(Path(cfg.out) / "sweep.md")
    if rep["diverged"]:  # after every other point and every output: exit 3, as a training that diverges
        from hairdiff.core.errors import TrainingDiverged

        raise TrainingDiverged(f"{len(rep['diverged'])} of {rep['total']} points diverged in training and have no "
                               f"scores ({', '.join(rep['diverged'])}): recorded as diverged in sweep.json, the other "
                               f"points are scored; delete a point's folder under {Path(cfg.out) / 'points'} to train "
                               "it again (with another --iters or recipe)")
