"""Two CPU processes (torchrun, gloo) with a global batch of 4 train like one process with a batch of 4.

The two-process run goes through `pipeline train --nproc 2`, i.e. the relaunch built from TrainConfig. Crops
of half the image make the processes' halves hold different numbers of masks (a crop without hair), so the
loss's denominators must be the global batch's (all-reduced) for the curves to agree."""
from __future__ import annotations

import numpy as np
from safetensors.torch import load_file

from hairdiff.train.loop import train
from tests.fixtures.cli import run_pipeline
from tests.fixtures.stores import TINY, log_rows, toy_train_config
from tests.fixtures.stores import make_train_store as make_store


def test_two_processes_match_one(tmp_path):
    store = make_store(tmp_path, n=8)
    one, two = tmp_path / "one", tmp_path / "two"
    train(toy_train_config(store, one, iters=3, batch_size=4, lr=1e-3, seed=1, ckpt_every=3, crop=16), device="cpu")
    res = run_pipeline("train", "--nproc", "2", "--cache", store, "--out", two, "--iters", "3", "--batch-size", "4",
                       "--lr", "1e-3", "--seed", "1", "--device", "cpu", "--ckpt-every", "3", "--no-progress",
                       "--crop", "16", "--no-small", *[f"--head={k}={v}" for k, v in TINY.items()],
                       cache_root=tmp_path, own_process=True)  # torchrun's processes print to the real stdout
    assert res.stdout.strip().splitlines()[-1] == str(two)  # rank 0 prints the run folder last

    a, b = log_rows(one), log_rows(two)
    assert [r["iter"] for r in b] == [1, 2, 3]  # rank 1 wrote nothing of its own
    for ra, rb in zip(a, b):
        for key in ("loss", "loss_ce", "loss_mask", "loss_dice"):
            np.testing.assert_allclose(rb[key], ra[key], rtol=1e-5, err_msg=f"iteration {ra['iter']} {key}")
    # The gradients were averaged the same way: weights after 3 steps agree too, except a conv's bias that a
    # GroupNorm follows: its gradient is 0 up to rounding, which Adam scales up to steps of either sign.
    wa, wb = load_file(str(one / "head.safetensors")), load_file(str(two / "head.safetensors"))
    for k in set(wa) - zero_gradient_biases():
        np.testing.assert_allclose(wb[k].numpy(), wa[k].numpy(), rtol=1e-4, atol=1e-5, err_msg=k)


def zero_gradient_biases() -> set[str]:
    """Names of the biases of convolutions followed by a GroupNorm in the TINY head (normalised away)."""
    from torch import nn

    from hairdiff.model.mask2former.head import HeadConfig, Mask2FormerHead
    from tests.fixtures.stores import LEVELS

    head, names = Mask2FormerHead(LEVELS, HeadConfig(**TINY)), set()
    for prefix, seq in head.named_modules():
        if isinstance(seq, nn.Sequential):
            for i, (a, b) in enumerate(zip(seq, list(seq)[1:])):
                if isinstance(a, nn.Conv2d) and a.bias is not None and isinstance(b, nn.GroupNorm):
                    names.add(f"{prefix}.{i}.bias")
    assert names, "expected conv + GroupNorm pairs in the head"
    return names
