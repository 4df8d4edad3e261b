"""The view-major layout of a store's samples: one owner answers which image and which view a sample is."""
from __future__ import annotations

import numpy as np
import pytest

from hairdiff.cache.layout import ViewLayout
from hairdiff.core.errors import CacheError


def test_view_major_layout_answers_image_view_originals_and_views():
    lay = ViewLayout.from_attrs({"recipe": "flip+scale:0.5", "names": ["original", "flip", "scale0.5"],
                                 "num_images": 4}, 12)
    assert (lay.num_images, lay.num_views, lay.num_samples) == (4, 3, 12)
    # sample j is image j % N in view j // N, listed by hand
    table = [(j, j % 4, j // 4) for j in range(12)]
    assert [(j, lay.image_of(j), lay.view_of(j)) for j in range(12)] == table
    assert lay.image_of(np.arange(12)).tolist() == [t[1] for t in table]
    assert lay.view_name(9) == "scale0.5" and lay.sample(1, 2) == 9
    assert lay.originals().tolist() == [0, 1, 2, 3]
    assert lay.is_original(np.array([0, 3, 4, 11])).tolist() == [True, True, False, False]
    assert lay.views_of(2).tolist() == [2, 6, 10]
    assert lay.of_images([0, 1, 2, 5, 6, 9, 11], 2).tolist() == [0, 1, 5, 9]
    assert lay.ids(["a", "b", "c", "d"])[:6] == ["a", "b", "c", "d", "a@flip", "b@flip"]
    assert lay.attrs() == {"recipe": "flip+scale:0.5", "names": ["original", "flip", "scale0.5"], "num_images": 4}
    with pytest.raises(IndexError):
        lay.sample(4, 0)


def test_by_image_groups_done_samples_original_first():
    lay = ViewLayout.with_views(3, ["flip", "lsj0"], "flip+lsj:1")
    images, groups = lay.by_image([8, 1, 7, 4, 2])  # image 0 has no done sample
    assert images.tolist() == [1, 2] and [g.tolist() for g in groups] == [[1, 4, 7], [2, 8]]
    assert [g.tolist() for g in lay.by_image([7, 4])[1]] == [[4, 7]]  # view order even without the original
    assert lay.by_image([])[0].size == 0


def test_a_store_without_views_is_its_own_images_and_a_damaged_record_is_named():
    plain = ViewLayout.from_attrs(None, 5)
    assert (plain.num_images, plain.num_views, plain.attrs()) == (5, 1, None)
    assert plain.is_original(np.arange(5)).all() and plain.ids(list("abcde")) == list("abcde")
    assert ViewLayout.with_views(5, [], None) == plain
    with pytest.raises(CacheError, match="s.zarr records 4 images x 2 views but holds 9 samples"):
        ViewLayout.from_attrs({"recipe": "flip", "names": ["original", "flip"], "num_images": 4}, 9, "s.zarr")
