"""FLOPs of exactly the work one extractor call does, split by network (torch's own flop counter)."""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

NETWORKS = ("vae_encoder", "unet", "vae_decoder")


def count_flops(extractor, batch_size: int = 1) -> dict:
    """{"vae_encoder": n, "unet": n, "vae_decoder": n, "total": n} for one call on `batch_size` images.

    The call is a real one (same early stops, same hooks), so a network that stops after its last tap is
    counted only up to there. The prompt embedding is computed once per extractor and is not counted.
    Segments are cut where each network starts: the running total is read in a pre-hook on its entry module.
    """
    bb = extractor.bb
    entries = [(bb.vae.encoder, "vae_encoder"), (bb.unet, "unet"), (bb.vae.decoder, "vae_decoder")]
    if getattr(bb.vae, "post_quant_conv", None) is not None:
        # decode() runs post_quant_conv before the decoder: it belongs to the decoder's work
        entries.append((bb.vae.post_quant_conv, "vae_decoder"))
    counts = dict.fromkeys(NETWORKS, 0)
    state = {"network": None, "mark": 0}
    counter = FlopCounterMode(display=False)

    def enter(network):
        def pre_hook(module, args):
            now = counter.get_total_flops()
            if state["network"] is not None:
                counts[state["network"]] += now - state["mark"]
            state["network"], state["mark"] = network, now
        return pre_hook

    r = extractor.resolution
    images = torch.zeros((batch_size, 3, r, r), device=bb.device, dtype=bb.dtype)
    hooks = [m.register_forward_pre_hook(enter(n)) for m, n in entries]
    try:
        with counter:
            extractor(images)
        if state["network"] is not None:
            counts[state["network"]] += counter.get_total_flops() - state["mark"]
    finally:
        for h in hooks:
            h.remove()
    counts["total"] = counter.get_total_flops()
    return counts
