"""What `pipeline eval` and `pipeline predict` do, as dataclasses: their fields are the commands' options."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from hairdiff.core.devices import check_device
from hairdiff.core.errors import UsageError
from hairdiff.core.fields import LOCAL, MAX_BATCH, URL, at_least, at_most, check_paths, option, seed_range

OnError = Literal["stop", "skip"]
# Images per backbone pass of `pipeline predict` and of the Python API alike: a batch's masks equal those of 1 up
# to float rounding, so one default keeps the two giving the same masks.
DEFAULT_BATCH_SIZE = 1


def check_run_dir(run) -> None:
    """UsageError unless --run is a folder; called before any model or store is loaded."""
    if not Path(run).is_dir():
        raise UsageError(f"--run {run}: no such folder; pass the --out folder of a `pipeline train` run")


def _check_common(cfg) -> None:
    at_least(cfg, 1, "batch_size")
    at_most(cfg, MAX_BATCH, "a batch is held in memory whole", "batch_size")
    check_device(cfg.device)


@dataclass(kw_only=True)
class EvalConfig:
    run: str = option(help="run folder of `pipeline train`", path=LOCAL)
    cache: str = option(help="feature store to score", path=URL)
    out: str = option(help="folder for metrics.json, metrics.md, per_image.json, overlays/", path=LOCAL)
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    batch_size: int = option(8, help="samples per forward pass")
    overlays: int = option(4, help="overlays of the best and of the worst images")
    best: bool = option(True, help="score RUN/best/ (the head with the best validation mIoU, from `pipeline train "
                                   "--val`) when the run has one; --no-best: the final head")

    def __post_init__(self):
        self.run, self.cache, self.out = str(self.run), str(self.cache), str(self.out)
        check_paths(self)
        _check_common(self)
        at_least(self, 0, "overlays")


@dataclass(kw_only=True)
class PredictConfig:
    images: list[str] = option(argument=True, help="image files, or folders: their .jpg .jpeg .png .bmp .webp "
                                                   "files, sorted by name (not subfolders)", path=LOCAL)
    run: str = option(help="run folder of `pipeline train`", path=LOCAL)
    out: str = option(help="folder for <stem>_mask.png, <stem>_overlay.png, predictions.json", path=LOCAL)
    model: str | None = option(None, path=LOCAL, help="backbone to load when the run's model is not reachable by its "
                                          "recorded name (a local folder)")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    batch_size: int = option(DEFAULT_BATCH_SIZE, help="images per backbone pass (the masks equal those of 1, up to "
                                                      "float rounding)")
    on_error: OnError = option("stop", help="an image that cannot be read: stop there (keeping what was written), "
                                            "or skip it (listed in predictions.json and on stderr)")
    best: bool = option(True, help="use RUN/best/ (the head with the best validation mIoU, as `pipeline eval` "
                                   "does) when the run has one; --no-best: the final head")

    def __post_init__(self):
        self.images, self.run, self.out = [str(i) for i in self.images], str(self.run), str(self.out)
        check_paths(self)
        _check_common(self)
        if self.on_error not in ("stop", "skip"):
            raise UsageError(f"--on-error {self.on_error!r}: use stop or skip")


@dataclass(kw_only=True)
class ExportConfig:
    run: str = option(argument=True, help="run folder of `pipeline train` (or `pipeline reproduce`/`demo`'s OUT/run)",
                      path=LOCAL)
    out: str = option(help="model folder to write: config.json, model.safetensors, README.md (the model card)",
                      path=LOCAL)
    metrics: str | None = option(None, help="metrics.json of `pipeline eval` for the card (default: RUN/eval/ or the "
                                            "eval/ beside RUN, when it scored this head)", path=LOCAL)
    best: bool = option(True, help="export RUN/best/ (the head with the best validation mIoU) when the run has one, "
                                   "as `pipeline eval` scores it; --no-best: the final head")
    push_to: str | None = option(None, help="then publish the folder to this Hugging Face Hub repository "
                                            "(user/name; a token from `hf auth login` or HF_TOKEN)")

    def __post_init__(self):
        self.run, self.out = str(self.run), str(self.out)
        check_paths(self)
        if not Path(self.run).is_dir():
            raise UsageError(f"RUN {self.run}: no such folder; pass the --out folder of a `pipeline train` run")


@dataclass(kw_only=True)
class ServeConfig:
    model: str = option(argument=True, help="a run folder, a model folder (`pipeline export`) or a Hugging Face Hub "
                                            "id of one")
    host: str = option("127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    port: int = option(7860, help="port to listen on (0: any free port)")
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")
    backbone: str | None = option(None, help="where to load the backbone from when its recorded name is not "
                                             "reachable (a local folder)", path=LOCAL)
    max_images: int = option(8, help="images segmented per request")

    def __post_init__(self):
        self.model = str(self.model)
        check_paths(self)
        check_device(self.device)
        at_least(self, 1, "max_images")
        at_most(self, MAX_BATCH, "a request's images are held in memory whole", "max_images")
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port {self.port}: use 0..65535")


@dataclass(kw_only=True)
class CompareConfig:
    evaluations: list[str] = option(argument=True, help="two or more evaluations of the same test images: `pipeline "
                                                        "eval` --out folders (or their metrics.json), or a folder "
                                                        "holding exactly one (a run folder with its eval inside, a "
                                                        "`pipeline reproduce` --out, a sweep point)", path=LOCAL)
    out: str = option(help="folder for compare.json and compare.md", path=LOCAL)
    resamples: int = option(10_000, help="bootstrap resamples of the test images (the same draws for every "
                                         "evaluation: a paired bootstrap)")
    seed: int = option(0, help="seed of the resamples (the same seed gives the same intervals)")

    def __post_init__(self):
        self.evaluations, self.out = [str(e) for e in self.evaluations], str(self.out)
        if len(self.evaluations) < 2:
            raise UsageError(f"pipeline compare: got {len(self.evaluations)} evaluation(s); pass two or more, the "
                             "first is the one the others are compared with")
        check_paths(self)
        at_least(self, 100, "resamples")
        at_most(self, 1_000_000, "the resamples of every evaluation are held in memory at once", "resamples")
        seed_range(self, "seed")
