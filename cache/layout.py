"""Which image and which view a store sample is: the one owner of the view-major layout.

A store extracted with `--views` (extract/views.py) holds N images in V views, view 0 being the original
image, as N x V samples ordered view-major: sample j is image j % N in view j // N. So samples 0..N-1 are
the originals (what `eval` scores, and what a store without views holds), and a limited or interrupted
extraction fills the same images in every view. The store attribute `views` records the layout:
{"recipe": the --views text, "names": ["original", <view names>...], "num_images": N}; a store without it
holds one view (the original) per image.

Extraction (extract/runner.py, extract/views.py), training (train/data.py) and evaluation (evaluate/run.py)
ask a ViewLayout rather than doing the index arithmetic themselves.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hairdiff.core.errors import CacheError

ORIGINAL = "original"
VIEW_SEP = "@"  # a view sample's id is <id>@<view>: dataset ids may not hold it (extract/readers/base.py)


@dataclass(frozen=True)
class ViewLayout:
    num_images: int
    names: tuple[str, ...] = (ORIGINAL,)  # view 0 is always the original image
    recipe: str | None = None  # the --views text that made the views (None: no views)

    def __post_init__(self):
        if self.num_images < 0 or not self.names or self.names[0] != ORIGINAL:
            raise ValueError(f"a view layout needs num_images >= 0 and '{ORIGINAL}' as its first view, got "
                             f"{self.num_images} images and views {list(self.names)}")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_attrs(cls, views: dict | None, num_samples: int, where: str = "the store") -> "ViewLayout":
        """The layout a store's `views` attribute records (None: one view per sample); checked against the
        store's sample count, so a store whose attributes disagree is named rather than misread."""
        if not views:
            return cls(int(num_samples))
        layout = cls(int(views["num_images"]), tuple(views["names"]), views.get("recipe"))
        if layout.num_samples != num_samples:
            raise CacheError(f"{where} records {layout.num_images} images x {layout.num_views} views but holds "
                             f"{num_samples} samples: the store is damaged; extract it again")
        return layout

    @classmethod
    def with_views(cls, num_images: int, view_names, recipe: str | None) -> "ViewLayout":
        """The layout of an extraction of `num_images` images plus the named extra views."""
        return cls(int(num_images), (ORIGINAL, *view_names), recipe if view_names else None)

    def attrs(self) -> dict | None:
        """The store attribute `views` (None for a store without views, as stores have always been written)."""
        if self.num_views == 1:
            return None
        return {"recipe": self.recipe, "names": list(self.names), "num_images": self.num_images}

    # ------------------------------------------------------------------ questions
    @property
    def num_views(self) -> int:
        return len(self.names)

    @property
    def num_samples(self) -> int:
        return self.num_images * self.num_views

    def image_of(self, sample):
        """The image (0..N-1) of a sample index, or of each index of an array."""
        return np.asarray(sample) % self.num_images if np.ndim(sample) else int(sample) % self.num_images

    def view_of(self, sample):
        """The view (0 = the original) of a sample index, or of each index of an array."""
        return np.asarray(sample) // self.num_images if np.ndim(sample) else int(sample) // self.num_images

    def view_name(self, sample: int) -> str:
        return self.names[self.view_of(sample)]

    def sample(self, image: int, view: int = 0) -> int:
        """The sample index of `image` in `view`."""
        if not (0 <= image < self.num_images and 0 <= view < self.num_views):
            raise IndexError(f"image {image} view {view} outside {self.num_images} images x {self.num_views} views")
        return view * self.num_images + image

    def is_original(self, sample):
        """True where a sample (or each of an array) is an original image, not an augmented view."""
        return self.view_of(sample) == 0

    def originals(self) -> np.ndarray:
        """The sample indices of the original images, in image order."""
        return np.arange(self.num_images, dtype=np.int64)

    def views_of(self, image: int) -> np.ndarray:
        """The sample indices of one image in every view, the original first."""
        return np.asarray([self.sample(image, v) for v in range(self.num_views)], dtype=np.int64)

    def of_images(self, samples, limit: int) -> np.ndarray:
        """The samples (of an index array) that belong to the first `limit` images, in any view."""
        samples = np.asarray(samples, dtype=np.int64)
        return samples[self.image_of(samples) < limit]

    def by_image(self, samples) -> tuple[np.ndarray, list[np.ndarray]]:
        """Group sample indices by image: (the images that have any, ascending; for each, its samples among
        `samples` in view order, so the original comes first when it is there)."""
        samples = np.sort(np.asarray(samples, dtype=np.int64))
        if samples.size == 0:
            return np.zeros(0, np.int64), []
        images = self.image_of(samples)
        order = np.argsort(images, kind="stable")  # sorted samples are view-major: view order within an image
        found, starts = np.unique(images[order], return_index=True)
        return found, np.split(samples[order], starts[1:])

    def image_ids(self, sample_ids) -> list[str]:
        """The images' own ids among a store's sample ids (the originals'; `<id>@<view>` ids are their views)."""
        return [str(i) for i in list(sample_ids)[:self.num_images]]

    def ids(self, image_ids) -> list[str]:
        """Every sample's id: the images' own ids, then `<id>@<view>` for each view, view-major."""
        base = [str(i) for i in image_ids]
        if len(base) != self.num_images:
            raise ValueError(f"{len(base)} ids for a layout of {self.num_images} images")
        return base + [f"{i}{VIEW_SEP}{v}" for v in self.names[1:] for i in base]
