"""RUN/curves.png: loss terms, learning rate, gradient norm and throughput over iterations, and the
validation metrics (val_*) when the run validated."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

_NOT_TERMS = {"iter", "loss", "lr", "grad_norm", "images_per_s", "data_wait_s", "time", "epoch"}
VAL_PLOTTED = ("val_mIoU", "val_f1", "val_hair_iou", "val_boundary_f")


def read_log(path: Path) -> list[dict]:
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


# Plain tick labels on the log axes ("0.7", not 7x10^-1): easier to read, and mathtext is most of a plot's cost.
_PLAIN = FuncFormatter(lambda v, _: f"{v:.3g}")


def _log_scale(ax) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PLAIN)
    ax.yaxis.set_minor_formatter(_PLAIN)


def _plot_validation(ax, rows: list[dict]) -> None:
    it = [r["iter"] for r in rows]
    for key in (k for k in VAL_PLOTTED if k in rows[0]):
        ax.plot(it, [r.get(key, float("nan")) for r in rows], marker="o", ms=3, lw=1, label=key[4:])
    best = max(rows, key=lambda r: r["val_mIoU"] if r["val_mIoU"] == r["val_mIoU"] else float("-inf"))
    ax.axvline(best["iter"], color="grey", ls=":", lw=1, label=f"best mIoU {best['val_mIoU']:.2f}")
    ax.set_title("validation (%)")
    ax.legend(fontsize=7)


def plot_curves(log_path: Path, out_png: Path) -> Path:
    rows = read_log(log_path)
    if not rows:
        raise ValueError(f"{log_path} has no iterations to plot")
    it = [r["iter"] for r in rows]
    val_rows = [r for r in rows if "val_mIoU" in r]
    fig, axes = plt.subplots(2, 3 if val_rows else 2, figsize=(16 if val_rows else 11, 7), squeeze=False)
    ax = axes[0, 0]
    ax.plot(it, [r["loss"] for r in rows], color="k", lw=1.5, label="total")
    _log_scale(ax)
    ax.set_title("total loss")
    ax = axes[0, 1]
    # Only the final-layer terms: the per-decoder-layer (aux) copies would bury them.
    for key in sorted(k for k in rows[0] if k not in _NOT_TERMS and not k.startswith("val_")
                      and not k.rsplit("_", 1)[-1].isdigit()):
        ax.plot(it, [r.get(key, float("nan")) for r in rows], lw=1, label=key)
    _log_scale(ax)
    ax.set_title("loss terms (last decoder layer)")
    ax.legend(fontsize=7)
    axes[1, 0].plot(it, [r["lr"] for r in rows])
    axes[1, 0].set_title("learning rate")
    axes[1, 1].plot(it, [r["grad_norm"] for r in rows], label="grad norm (before clipping)")
    _log_scale(axes[1, 1])
    ips = axes[1, 1].twinx()
    ips.plot(it, [r["images_per_s"] for r in rows], color="tab:orange", lw=0.8, label="images/s")
    axes[1, 1].set_title("grad norm (blue), images/s (orange)")
    if val_rows:
        _plot_validation(axes[0, 2], val_rows)
        axes[1, 2].axis("off")
    for a in axes.flat:
        a.set_xlabel("iteration")
    # Fixed margins: tight_layout measures every tick label of the log axes, 1-2 s of CPU per run.
    fig.subplots_adjust(left=0.07, right=0.95, bottom=0.08, top=0.95, wspace=0.28, hspace=0.35)
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
