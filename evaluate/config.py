"""What `pipeline eval` and `pipeline predict` do, as dataclasses: their fields are the commands' options."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hairdiff.core.devices import check_device
from hairdiff.core.errors import UsageError
from hairdiff.core.fields import at_least, option

OnError = Literal["stop", "skip"]


def check_run_dir(run) -> None:
    """UsageError unless --run is a folder; called before any model or store is loaded."""
    if not Path(run).is_dir():
        raise UsageError(f"--run {run}: no such folder; pass the --out folder of a `pipeline train` run")


def _check_common(cfg) -> None:
    at_least(cfg, 1, "batch_size")
    check_device(cfg.device)


@dataclass(kw_only=True)
class EvalConfig:
    run: str = option(help="run folder of `pipeline train`")
    cache: str = option(help="feature store to score (path or URL)")
    out: str = option(help="folder for metrics.json, metrics.md, per_image.json, overlays/")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    batch_size: int = option(8, help="samples per forward pass")
    overlays: int = option(4, help="overlays of the best and of the worst images")
    best: bool = option(True, help="score RUN/best/ (the head with the best validation mIoU, from `pipeline train "
                                   "--val`) when the run has one; --no-best: the final head")

    def __post_init__(self):
        self.run, self.cache, self.out = str(self.run), str(self.cache), str(self.out)
        _check_common(self)
        at_least(self, 0, "overlays")


@dataclass(kw_only=True)
class PredictConfig:
    images: list[str] = option(argument=True, help="image files, or folders: their .jpg .jpeg .png .bmp .webp "
                                                   "files, sorted by name (not subfolders)")
    run: str = option(help="run folder of `pipeline train`")
    out: str = option(help="folder for <stem>_mask.png, <stem>_overlay.png, predictions.json")
    model: str | None = option(None, help="backbone to load when the run's model is not reachable by its "
                                          "recorded name (a local folder)")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    batch_size: int = option(1, help="images per backbone pass (the masks equal those of 1, up to float rounding)")
    on_error: OnError = option("stop", help="an image that cannot be read: stop there (keeping what was written), "
                                            "or skip it (listed in predictions.json and on stderr)")
    best: bool = option(True, help="use RUN/best/ (the head with the best validation mIoU, as `pipeline eval` "
                                   "does) when the run has one; --no-best: the final head")

    def __post_init__(self):
        self.images, self.run, self.out = [str(i) for i in self.images], str(self.run), str(self.out)
        _check_common(self)
        if self.on_error not in ("stop", "skip"):
            raise UsageError(f"--on-error {self.on_error!r}: use stop or skip")


@dataclass(kw_only=True)
class CompareConfig:
    evaluations: list[str] = option(argument=True, help="two or more evaluations of the same test images: `pipeline "
                                                        "eval` --out folders (or their metrics.json), or a folder "
                                                        "holding exactly one (a run folder with its eval inside, a "
                                                        "`pipeline reproduce` --out, a sweep point)")
    out: str = option(help="folder for compare.json and compare.md")
    resamples: int = option(10_000, help="bootstrap resamples of the test images (the same draws for every "
                                         "evaluation: a paired bootstrap)")
    seed: int = option(0, help="seed of the resamples (the same seed gives the same intervals)")

    def __post_init__(self):
        self.evaluations, self.out = [str(e) for e in self.evaluations], str(self.out)
        if len(self.evaluations) < 2:
            raise UsageError(f"pipeline compare: got {len(self.evaluations)} evaluation(s); pass two or more, the "
                             "first is the one the others are compared with")
        at_least(self, 100, "resamples")
