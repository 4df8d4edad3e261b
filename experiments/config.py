"""What `pipeline reproduce` and `pipeline sweep` do, as dataclasses: their fields are the commands' options.

ExperimentOptions are the options both share (which data, which backbone, how much, where); a sweep adds
its grid (timesteps x prompts x tap sets). Everything is checked on construction, before any dataset,
model or store is touched, and nothing here imports the stages' heavy code (`pipeline --help` stays fast).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from hairdiff.core.devices import check_device
from hairdiff.core.errors import UsageError
from hairdiff.core.fields import LOCAL, URL, at_least, check_paths, option
from hairdiff.core.recipe import FULL, Recipe
from hairdiff.core.urls import local_option
from hairdiff.experiments.recipes import OPTION, provenance, recipe_for
from hairdiff.extract.config import MAX_TIMESTEP, canonical_prompt, check_scheduler
from hairdiff.extract.readers.registry import names, paper_datasets
from hairdiff.extract.taps import TAP_SETS


@dataclass(kw_only=True)
class ExperimentOptions:
    """Which data, which backbone, how much, where: checked on construction, before anything is read."""

    dataset: str = option(help=f"the dataset: one of {' | '.join(names())} that declares the paper's train/test "
                               "splits (extract/readers/)")
    root: str = option(help="the dataset's root in its published layout", path=LOCAL)
    model: str = option(FULL.model, help="the backbone: hub id, local folder, or 'tiny' (a CPU smoke run of the "
                                         "same steps)")
    limit: int | None = option(None, help="only the first N images of each split (a smoke run)")
    iters: int | None = option(None, help="training iterations (default: the recipe's)")
    ids_train: str | None = option(None, help="ids file of the training images (with --ids-test: your own split)",
                                   path=LOCAL)
    ids_test: str | None = option(None, help="ids file of the test images", path=LOCAL)
    cache_root: str | None = option(None, help="where stores live (default $HAIRDIFF_CACHE or ~/.cache/hairdiff)",
                                    path=URL)
    device: str = option("auto", help="auto | cpu | cuda | cuda:N")

    def __post_init__(self):
        check_paths(self)
        self.model = local_option(self.model, "--model")
        if self.dataset not in paper_datasets():
            raise UsageError(f"--dataset {self.dataset!r}: use one of {', '.join(paper_datasets())} (the datasets "
                             "with the paper's train/test splits)")
        if self.limit is not None and self.limit < 2:
            raise UsageError(f"--limit {self.limit}: use 2 or more (one image to train on, one to score)")
        at_least(self, 1, "iters")
        if bool(self.ids_train) != bool(self.ids_test):
            raise UsageError("--ids-train and --ids-test go together: pass both, or neither for the dataset's split")
        check_device(self.device)
        if self.model != "tiny" and os.path.exists(self.model):  # a local model is bound by where it is, not by
            self.model = os.path.realpath(self.model)  # its spelling (./sd13 and /abs/sd13 are one model)

    @property
    def recipe(self) -> Recipe:
        """The recipe these options run: the full one for a real backbone, the smoke run's for `tiny`, with
        --iters applied."""
        r = recipe_for(self.model)
        return replace(r, iters=self.iters) if self.iters else r

    def provenance(self) -> list[dict]:
        """Every setting of the recipe with its value and source (experiments/recipes.py)."""
        return provenance(self.recipe, model=self.model, iters=self.iters)


@dataclass(kw_only=True)
class ReproduceConfig(ExperimentOptions):
    out: str = option("reproduce", help="folder for the splits, run, evaluation and report", path=LOCAL)


AXES = ("timestep", "prompt", "taps")
NO_VIEWS = "none"  # --views none: the training split's images only
TAP_SET_NAMES = tuple(TAP_SETS)
SWEEP_AXIS = "sweep axis"


@dataclass(frozen=True)
class Point:
    timestep: int
    prompt: str
    taps: str

    @property
    def name(self) -> str:
        """Readable and unique: t<timestep>-<taps>-<prompt slug>-<hash of all three> (a folder name)."""
        slug = re.sub(r"[^a-z0-9]+", "_", self.prompt.lower()).strip("_")[:24] or "empty"
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]
        return f"t{self.timestep}-{self.taps}-{slug}-{digest}"


# ------------------------------------------------------------------------------------------------ the grid
def parse_timesteps(text: str) -> list[int]:
    """'0,25,50' -> [0, 25, 50]; UsageError naming the first bad item."""
    items = [s.strip() for s in str(text).split(",")]
    if not any(items):
        raise UsageError("--timesteps is empty: give a comma-separated list such as 0,25,50")
    out = []
    for s in items:
        if not re.fullmatch(r"\d+", s):
            raise UsageError(f"--timesteps {text!r}: {s!r} is not a whole number; give integers 0..{MAX_TIMESTEP} "
                             "separated by commas, e.g. 0,25,50")
        if int(s) > MAX_TIMESTEP:
            raise UsageError(f"--timesteps {text!r}: {s} is out of 0..{MAX_TIMESTEP} (the diffusion schedule's steps)")
        out.append(int(s))
    _no_twice("--timesteps", text, out)
    return out


def parse_taps(text: str) -> list[str]:
    """'unet,odise' -> ['unet', 'odise']: named tap sets only (a module list is `pipeline extract --taps`)."""
    items = [s.strip() for s in str(text).split(",")]
    if not any(items):
        raise UsageError(f"--taps is empty: give tap sets separated by commas ({', '.join(TAP_SET_NAMES)})")
    for s in items:
        if s not in TAP_SET_NAMES:
            raise UsageError(f"--taps {text!r}: {s!r} is not a tap set; use {' or '.join(TAP_SET_NAMES)}, separated "
                             "by commas (explicit module names: run `pipeline extract --taps` per setting)")
    _no_twice("--taps", text, items)
    return items


EMPTY = '""'  # the empty prompt, written where an empty value cannot be (a line of a prompts file)


def parse_prompt(text: str) -> str:
    """One prompt as given (a --prompts value or a line of a prompts file), in its canonical spelling
    (extract/config.py canonical_prompt); `""` is the empty prompt in both."""
    prompt = canonical_prompt(text)
    return "" if prompt == EMPTY else prompt


def read_prompts_file(path: str) -> list[str]:
    """One prompt per line, each read as a --prompts value is (parse_prompt); blank lines are skipped and a line
    `""` is the empty prompt (so a stray blank line never adds a point)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or type(e).__name__
        raise UsageError(f"--prompts-file {path}: cannot read it ({reason}): pass a UTF-8 text file, one prompt "
                         "per line") from None
    return [parse_prompt(line) for line in text.splitlines() if canonical_prompt(line)]


def _no_twice(flag: str, text, values: list, note: str = "") -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise UsageError(f"{flag} {text!r}: {v!r} is given twice{note}, which would make duplicate points: give "
                             "each value once")
        seen.add(v)


@dataclass(kw_only=True)
class SweepConfig(ExperimentOptions):
    out: str = option("sweep", help="folder for points/<name>/{run,eval}, sweep.json, sweep.md, sweep.png",
                      path=LOCAL)
    timesteps: str = option(str(FULL.timestep), help=f"the timesteps to try, comma-separated integers "
                                                     f"0..{MAX_TIMESTEP} (e.g. 0,25,50,100,200)")
    prompts: list[str] | None = option(None, help="the prompts to try: one or more values after the flag, or the "
                                                  "flag repeated; \"\" is the empty prompt; surrounding or repeated "
                                                  "whitespace and a byte-order mark do not count (default: the "
                                                  f"recipe's {FULL.prompt!r})")
    prompts_file: str | None = option(None, help="more prompts, one per line, each read as a --prompts value "
                                                 "(blank lines skipped; a line \"\" is the empty prompt)", path=LOCAL)
    taps: str = option(FULL.taps, help=f"the tap sets to try, comma-separated: {', '.join(TAP_SET_NAMES)}")
    views: str | None = option(None, help="the training split's views for every point (default: the recipe's; "
                                          "'none' for the images only)")
    scheduler: str | None = option(None, help="Dask: extract the points' stores on a cluster, local:N (N worker "
                                              "processes) or tcp://HOST:PORT; training and scoring stay here")
    stop_after: int | None = option(None, help="finish this many more points, then stop (the same command "
                                               "continues)")

    def __post_init__(self):
        super().__post_init__()  # dataset, limit, iters, ids files, device
        at_least(self, 1, "stop_after")
        self.grid_timesteps = parse_timesteps(self.timesteps)
        self.grid_taps = parse_taps(self.taps)
        prompts = [parse_prompt(v) for v in self.prompts] if self.prompts is not None else []
        if self.prompts_file:
            from_file = read_prompts_file(self.prompts_file)
            if not from_file:
                raise UsageError(f"--prompts-file {self.prompts_file}: holds no prompt (one per line; a line \"\" "
                                 "is the empty prompt)")
            prompts += from_file
        elif self.prompts is None:
            prompts = [FULL.prompt]
        if not prompts:
            raise UsageError("--prompts: no prompt given; pass one or more (\"\" is the empty prompt) or "
                             "--prompts-file")
        _no_twice("--prompts", prompts, prompts, note=" (prompts that differ only in surrounding or repeated "
                                                      "whitespace or a byte-order mark are one prompt)")
        self.grid_prompts = prompts
        if self.views is not None:  # bound (OUT/manifest.json) in its canonical spelling: `scale:.5` is `scale:0.5`
            from hairdiff.extract.views import canonical_views

            self.views = NO_VIEWS if self.views.strip().lower() in (NO_VIEWS, "") else canonical_views(self.views)
        check_scheduler(self.scheduler)

    @property
    def points(self) -> list[Point]:
        """The grid in a fixed order: prompt, then tap set, then timestep (a line of the plot at a time)."""
        return [Point(t, p, taps) for p in self.grid_prompts for taps in self.grid_taps for t in self.grid_timesteps]

    def reproduce_config(self) -> ReproduceConfig:
        return ReproduceConfig(dataset=self.dataset, root=self.root, model=self.model, out=self.out, limit=self.limit,
                               iters=self.iters, ids_train=self.ids_train, ids_test=self.ids_test,
                               cache_root=self.cache_root, device=self.device)

    @property
    def recipe(self) -> Recipe:
        """The shared recipe: reproduce's, with --views applied (the axes' fields are set per point)."""
        r = super().recipe
        if self.views is None:
            return r
        return replace(r, views=None if self.views == NO_VIEWS else self.views)

    def provenance(self) -> list[dict]:
        """Reproduce's table of sources, with the axes and --views said as such."""
        rows = self.reproduce_config().provenance()
        grid = {"timestep": self.grid_timesteps, "prompt": self.grid_prompts, "taps": self.grid_taps}
        full = FULL
        for row in rows:
            k = row["setting"]
            if k in grid:
                row.update(value=", ".join(map(repr, grid[k])) if k == "prompt" else ",".join(map(str, grid[k])),
                           source=SWEEP_AXIS, where=f"--{k}s (the recipe: {getattr(full, k)!r})" if k != "taps"
                           else f"--taps (the recipe: {full.taps!r})")
            elif k == "views" and self.views is not None:
                row.update(value=self.recipe.views, source=OPTION, where=f"--views (the recipe: {full.views})")
        return rows

    def shared_settings(self) -> dict:
        """What OUT/manifest.json binds: everything all points share (not the grid, the device or the cluster)."""
        ids = {part: _ids_digest(p) for part, p in (("train", self.ids_train), ("test", self.ids_test)) if p}
        return {"dataset": self.dataset, "root": str(Path(self.root).resolve()), "model": self.model,
                "limit": self.limit, "ids": ids,
                "recipe": {k: v for k, v in self.recipe.as_dict().items() if k not in AXES}}


def _ids_digest(path: str) -> str:
    """The ids an ids file selects, as its reader reads them (comments, blank lines, line ends and a byte-order
    mark aside): a file re-saved or re-commented with the same ids is the same setting."""
    from hairdiff.extract.readers.ids import read_ids_file

    try:
        ids = read_ids_file(path)
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e}): pass an existing ids "
                         "file") from None
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
