"""sweep.md, sweep.json and sweep.png mark the best point and every point not distinguishable from it: its 95%
interval of pooled mIoU (a bootstrap over the test images, in each point's metrics) overlaps the best's."""
from __future__ import annotations

from PIL import Image

from hairdiff.experiments.sweep import markdown, plot, versus_best


def row(name: str, timestep: int, miou: float, interval, status: str = "done") -> dict:
    metrics = {"mIoU": miou, "hair_iou": miou - 10, "f1": 70.0, "accuracy": 90.0, "precision": 70.0, "images": 13,
               "per_image_mean": {"mIoU": miou + 1}}
    if interval:
        metrics["intervals"] = {"images": 13, "pooled": {"mIoU": interval, "hair_iou": [v - 10 for v in interval]}}
    return {"name": name, "timestep": timestep, "prompt": "A photo of a hair.", "taps": "unet", "status": status,
            "metrics": metrics if status == "done" else None, "crop": 96, "reused": {"extract": False},
            "seconds": {"extract": 1.0, "train": 2.0, "eval": 0.5}}


def report(rows: list[dict]) -> dict:
    best = "t0"
    marks = versus_best(rows, best)
    return {"dataset": "figaro", "model": "tiny", "finished": 4, "total": 5, "diverged": [], "splits": "ours",
            "limit": 64,
            "random_weights": True, "provenance": [], "seconds": 10.0, "best": best, "test_images": 13,
            "points": [{**r, "versus_best": marks[r["name"]]} for r in rows],
            "indistinguishable_from_best": [n for n, m in marks.items() if m == "indistinguishable"]}


ROWS = [row("t0", 0, 54.67, [52.0, 57.1]), row("t100", 100, 54.02, [51.5, 56.3]),
        row("t500", 500, 45.0, [42.0, 51.9]), row("t900", 900, 50.0, None), row("t999", 999, 0, None, "pending")]


def test_the_best_and_the_points_whose_interval_overlaps_it_are_marked(tmp_path):
    marks = versus_best(ROWS, "t0")
    # 54.02 [51.5, 56.3] overlaps 54.67's [52.0, 57.1]; [42.0, 51.9] lies below 52.0; no interval: no verdict
    assert marks == {"t0": "best", "t100": "indistinguishable", "t500": "worse", "t900": None, "t999": None}
    rep = report(ROWS)
    assert rep["indistinguishable_from_best"] == ["t100"]
    md = markdown(rep)
    lines = {line.split("`")[-2]: line for line in md.splitlines() if line.startswith("| ") and "`t" in line}
    assert lines["t0"].startswith("| **best** |") and "54.67 [52.00, 57.10]" in lines["t0"]
    assert lines["t100"].startswith("| ~ best |") and "54.02 [51.50, 56.30]" in lines["t100"]
    assert lines["t500"].startswith("|  |") and lines["t900"].startswith("|  |")
    assert "not distinguishable from the best on 13 images" in md
    png = plot(rep, tmp_path / "sweep.png")
    assert Image.open(png).size[0] > 1.8 * Image.open(png).size[1]
