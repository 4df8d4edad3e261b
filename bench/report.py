"""What every benchmark row carries (device, versions, the exact command), and the table + JSON output."""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def checkout_on_path() -> None:
    """Run from a checkout: `import hairdiff` loads the folders beside bench/ (see pipeline.py)."""
    repo = str(Path(__file__).resolve().parents[1])
    if repo not in sys.path:
        sys.path.insert(0, repo)
    __import__("pipeline").use_checkout()


def device_name(device: str | None = None) -> str:
    import torch

    if device and str(device).startswith("cuda") or (device is None and torch.cuda.is_available()):
        return torch.cuda.get_device_name(torch.device(device or "cuda"))
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:  # no /proc (not Linux): the platform's own name stays
        pass
    return f"{cpu} ({os.cpu_count()} cores)"


def provenance(device: str | None = None) -> dict:
    from importlib.metadata import version

    import torch

    def v(name):
        try:
            return version(name)
        except Exception:
            return None

    return {"device": device_name(device), "torch": torch.__version__, "diffusers": v("diffusers"),
            "zarr": v("zarr"), "numcodecs": v("numcodecs"), "python": platform.python_version(),
            "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def write(name: str, rows: list[dict], summary: dict, out: Path = RESULTS) -> Path:
    """bench/results/<name>.json: {"summary": ..., "rows": [...]} with provenance on every row."""
    meta = provenance(summary.get("device_arg"))
    rows = [{**meta, **r} for r in rows]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"summary": {**meta, **summary}, "rows": rows}, indent=2, default=str))
    return path


def table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """columns: (header, key, format spec)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for header, _, _ in columns:
        t.add_column(header, no_wrap=True)
    for r in rows:
        t.add_row(*[("-" if r.get(k) is None else format(r[k], f)) for _, k, f in columns])
    Console(width=200).print(t)  # never squeezed, also when not on a terminal
