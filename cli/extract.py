"""`pipeline extract`: progress on stderr, a summary and a JSON report, the store URL as the last line."""
from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from hairdiff.cli.progress import err, rich_progress
from hairdiff.core.paths import reports_dir
from hairdiff.extract.config import ExtractConfig


def _report_path(cfg: ExtractConfig) -> Path:
    if cfg.report:
        return Path(cfg.report)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return reports_dir() / f"extract-{cfg.dataset}-{cfg.split}-{stamp}.json"


def extract(cfg: ExtractConfig) -> None:
    """Extract frozen Stable Diffusion features of a dataset into a shared Zarr feature store.

    Prints progress on stderr and the store's path or URL as the last line of stdout. Running the same
    command again reuses the store and computes only the missing samples.
    """
    from hairdiff.cache.distinct import check_distinct
    from hairdiff.core.errors import BadInputStop, Interrupted, UsageError
    from hairdiff.core.paths import check_output_dir
    from hairdiff.extract.runner import ExtractStats, run_local, write_report

    if cfg.report:  # where the report goes is checked before the work it reports
        if Path(cfg.report).is_dir():
            raise UsageError(f"--report {cfg.report}: a folder; pass the path of a .json file to write")
        check_output_dir(Path(cfg.report).parent, "--report's folder")
        check_distinct(outputs={"--report's folder": Path(cfg.report).parent})
    if cfg.cache_root:  # stores go under it: never inside another store
        check_distinct(outputs={"--cache-root": cfg.cache_root})
    stats = ExtractStats()
    report_path = None
    try:
        if cfg.scheduler:
            from hairdiff.extract.distributed import run_distributed

            run_distributed(cfg, stats, progress=rich_progress)
        else:
            run_local(cfg, stats, progress=rich_progress, log=err.print)
    except BadInputStop as e:
        raise BadInputStop(f"{str(e).rstrip('.')}. Everything already written is kept; fix or remove the file, or "
                           "pass --on-error skip, and run the same command again.") from None
    except KeyboardInterrupt:
        where = f" in {stats.store}" if stats.store else ""
        raise Interrupted(f"interrupted: {stats.computed} samples computed in this run are kept{where}; run the "
                          "same command again to continue") from None
    finally:
        report_path = _report_path(cfg)  # after listing: the split is settled
        if stats.store:
            try:
                write_report(report_path, cfg, stats)
            except OSError as e:  # a full disk must not hide the real error behind this one
                err.print(f"warning: could not write the report {report_path}: {e}")
    err.print(f"computed {stats.computed}, reused {stats.reused}, skipped {len(stats.skipped)}"
              + (f", {stats.claimed_elsewhere} claimed by another process" if stats.claimed_elsewhere else "")
              + f" in {stats.seconds:.1f} s ({stats.images_per_s:.2f} img/s)")
    if stats.no_hair:
        err.print(f"{stats.no_hair} image(s) labelled hair-free: annotated, but without a hair annotation file, "
                  f"which the {cfg.dataset} layout defines as no hair")
    if stats.skipped:
        err.print(f"skipped files are listed in {report_path}")
    err.print(f"report: {report_path}")
    sys.stdout.flush()
    print(stats.store)
