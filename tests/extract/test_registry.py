"""A new dataset touches one module: its reader declares itself to the registry, and every command takes it.

The reader below is the whole of a dataset the code base has never seen (`stripes`: <split>/<id>.png with
<id>.hair.png). Registering it here, and nothing else, makes it a choice of `pipeline extract`, of the
chain `pipeline reproduce` and `pipeline sweep` plan with (its declared paper splits), and of their
validation; the registry is the one owner of dataset names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hairdiff.cache import FeatureStore
from hairdiff.extract.readers.base import LoadedSample, SampleRef, load_image_and_mask, require_dir, select_ids
from hairdiff.extract.readers.registry import Dataset, get_reader, names, paper_datasets, register, unregister
from tests.fixtures.cli import invoke


class StripesReader:
    name = "stripes"

    def splits(self, root) -> list[str]:
        return sorted(p.name for p in Path(root).iterdir() if p.is_dir())

    def list_samples(self, root, split, ids=None) -> list[SampleRef]:
        folder = Path(root) / split
        require_dir(folder, f"the {split} images", "<split>/<id>.png with <id>.hair.png")
        refs = [SampleRef(p.stem, p, p.with_name(f"{p.stem}.hair.png")) for p in sorted(folder.glob("*.png"))
                if not p.name.endswith(".hair.png")]
        return select_ids(refs, ids, str(folder))

    def load(self, ref: SampleRef) -> LoadedSample:
        image, gray = load_image_and_mask(ref, "restore its .hair.png")
        return LoadedSample(ref.id, image, (gray > 127).astype(np.uint8))


@pytest.fixture
def stripes(tmp_path):
    register(Dataset("stripes", StripesReader, layout="<split>/<id>.png with <id>.hair.png", splits="any folder",
                     paper_splits=("train", "test")))
    root = tmp_path / "stripes"
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(root / split / f"s{i}.png")
            mask = np.zeros((40, 48), np.uint8)
            mask[:10] = 255
            Image.fromarray(mask).save(root / split / f"s{i}.hair.png")
    yield root
    unregister("stripes")


def test_a_registered_dataset_is_a_choice_of_every_command(stripes, tmp_path):
    from hairdiff.experiments.chain import choose_splits
    from hairdiff.experiments.config import ReproduceConfig
    from hairdiff.extract.config import ExtractConfig

    assert "stripes" in names() and "stripes" in paper_datasets()
    assert [r.id for r in get_reader("stripes").list_samples(stripes, "train")] == ["s0", "s1", "s2"]
    ExtractConfig(dataset="stripes", root=str(stripes))  # validated against the registry, not a fixed list
    cfg = ReproduceConfig(dataset="stripes", root=str(stripes), model="tiny", out=str(tmp_path / "out"))
    plan = choose_splits(cfg)
    assert (plan["train"], plan["test"]) == (("train", None), ("test", None))
    assert plan["note"] == "the paper's train / test splits"

    code, out, err = invoke("extract", "--dataset", "stripes", "--root", stripes, "--split", "train", "--model",
                            "tiny", "--resolution", 64, "--workers", 0, "--cache-root", tmp_path / "cache")
    assert code == 0, err
    store = FeatureStore.open(out.strip().splitlines()[-1])
    assert (store.dataset, store.num_samples) == ("stripes", 3)
    assert store.read_label(0)[:10].all() and not store.read_label(0)[10:].any()  # the reader's labels, stored


def test_an_unregistered_dataset_is_refused_naming_the_choices(tmp_path):
    code, _, err = invoke("extract", "--dataset", "stripes", "--root", tmp_path)
    assert code == 2
    assert err.strip() == f"error: --dataset 'stripes': use one of {', '.join(names())}"
    code, _, err = invoke("reproduce", "--dataset", "folder", "--root", tmp_path)
    assert code == 2 and "use one of celebamask, facesynthetics, figaro" in err
