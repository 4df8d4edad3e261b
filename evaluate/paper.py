"""The paper's result tables (Kim et al., Tables 1-3), kept as data next to the code that compares to them."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def _tables() -> dict:
    return json.loads(resources.files("hairdiff.evaluate").joinpath("paper_results.json").read_text())


def paper_rows(dataset: str) -> list[dict]:
    """All rows of the paper's table for `dataset` (figaro, celebamask, facesynthetics); [] for others."""
    entry = _tables().get(dataset)
    return list(entry["rows"]) if entry else []


def one_reading_bound(row: dict) -> str:
    """'' when a row's mIoU and F1 can come from one reading of one set of confusion matrices, else a note
    saying the least mIoU its F1 implies (evaluate.metrics.miou_floor; the table's 2-decimal rounding allowed)."""
    from hairdiff.evaluate.metrics import miou_floor

    mIoU, f1 = row.get("mIoU"), row.get("f1")
    if mIoU is None or f1 is None:
        return ""
    floor = miou_floor(f1)
    if mIoU >= floor - 0.01:
        return ""
    return f"F1 {f1:.2f} implies mIoU >= {floor:.2f}: not one reading"
