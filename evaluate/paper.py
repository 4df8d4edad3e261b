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
