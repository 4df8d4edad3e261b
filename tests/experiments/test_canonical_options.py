"""Options whose meaning is what matters are normalised once, where they are parsed, and bound in that form:
prompts that differ only by surrounding or repeated whitespace or a byte-order mark are one prompt (one point,
one store) whether given with --prompts or in a file; `--views scale:.5` is `scale:0.5`; a local model is one
model however its path is spelled."""
from __future__ import annotations

import pytest

from hairdiff.core.errors import UsageError
from hairdiff.core.manifest import bind
from hairdiff.core.recipe import FULL
from hairdiff.demo.hairlike import make_hairlike_dataset
from hairdiff.experiments.config import Point, SweepConfig
from hairdiff.extract.config import ExtractConfig
from hairdiff.extract.runner import ExtractStats, run_local


def sweep_config(tmp_path, **kw) -> SweepConfig:
    return SweepConfig(**{**dict(dataset="figaro", root=str(tmp_path), model="tiny", out=str(tmp_path / "sw")), **kw})


def test_a_prompt_is_one_prompt_however_it_is_spaced_flag_or_file(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_bytes("\ufeff A photo of a hair. \r\n\r\nhair  on\ta head\n  \"\"  \n".encode())
    from_file = sweep_config(tmp_path, prompts_file=str(f)).grid_prompts
    from_flag = sweep_config(tmp_path, prompts=["\ufeffA photo of a hair.", "hair on a head ", '""']).grid_prompts
    assert from_file == from_flag == [FULL.prompt, "hair on a head", ""]
    # The recipe's prompt spelled otherwise is the recipe's point (its name, its folder), not another one.
    cfg = sweep_config(tmp_path, prompts=[" A photo of a hair."], timesteps="0")
    assert cfg.points == [Point(0, FULL.prompt, "unet")]
    with pytest.raises(UsageError, match="given twice") as e:
        sweep_config(tmp_path, prompts=["hair", " hair", "\ufeffhair"])
    assert "byte-order mark" in str(e.value)


def test_a_views_spelling_binds_as_its_meaning(tmp_path):
    a, b = sweep_config(tmp_path, views="scale:0.5"), sweep_config(tmp_path, views=" scale:.50 ")
    assert a.views == b.views == "scale:0.5" and a.recipe.views == "scale:0.5"
    bind(tmp_path / "sw", "sweep", a.shared_settings(), fix="f")
    assert bind(tmp_path / "sw", "sweep", b.shared_settings(), fix="f") is True  # the same stores: not a change
    assert {sweep_config(tmp_path, views=v).views for v in ("none", " NONE ", "")} == {"none"}
    assert sweep_config(tmp_path, views="none").recipe.views is None
    assert ExtractConfig(dataset="folder", root=".", views="flip + scale:.5+scale:1.25").views == "flip+scale:0.5,1.25"
    with pytest.raises(UsageError, match="--views"):
        sweep_config(tmp_path, views="scale:.5+mirror")


def test_a_local_model_binds_by_where_it_is(tmp_path, monkeypatch):
    (tmp_path / "models" / "sd13").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    rel, absolute = sweep_config(tmp_path, model="./models/sd13"), sweep_config(tmp_path, model=str(
        tmp_path / "models" / "sd13"))
    assert rel.shared_settings() == absolute.shared_settings() and rel.model == str(tmp_path / "models" / "sd13")


def test_a_prompt_spelled_otherwise_finds_the_same_store(tmp_path):
    root = make_hairlike_dataset(tmp_path / "d", n=1, size=64, seed=3)
    stores = []
    for prompt in (FULL.prompt, "\ufeff  A photo of a  hair. \n"):
        cfg = ExtractConfig(dataset="folder", root=str(root), model="tiny", resolution=64, batch_size=1, workers=0,
                            prompt=prompt, cache_root=str(tmp_path / "cache"), device="cpu")
        stats = ExtractStats()
        run_local(cfg, stats, log=lambda m: None)
        stores.append(stats)
    assert stores[0].store == stores[1].store and stores[1].computed == 0 and stores[1].reused == 1


def test_an_ids_file_binds_by_the_ids_it_selects(tmp_path):
    a, b, test = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "test.txt"
    a.write_text("Frame00001\nFrame00002\n")
    b.write_bytes("\ufeff# the same two images\r\n Frame00001 \r\n\r\nFrame00002\r\n".encode())
    test.write_text("Frame00005\n")
    settings = [sweep_config(tmp_path, ids_train=str(f), ids_test=str(test)).shared_settings() for f in (a, b)]
    assert settings[0] == settings[1]
    a.write_text("Frame00001\nFrame00003\n")  # other images: another setting
    assert sweep_config(tmp_path, ids_train=str(a), ids_test=str(test)).shared_settings() != settings[0]
