"""The device stage of extraction: uint8 images in, float16 features out in host buffers, asynchronously.

`launch` enqueues everything for one batch and returns at once: the copy to the device, the backbone, the
cast to the stored half precision, a finiteness check per sample, and the copies back into (pinned) host
buffers on a separate stream, so they overlap the next batch's compute. `finish` waits for that batch, and
recomputes in float32 each sample whose features are not finite (the VAE first, then the whole backbone),
because the SD VAE overflows float16 on some inputs. A sample still not finite, or finite only beyond
float16's range, is reported, never written. Out of memory halves the micro-batch instead of losing the run.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from hairdiff.extract.loading import to_model_input
from hairdiff.extract.timing import StageClock

STORED = torch.float16  # features are stored as float16 (int8 stores quantise these values)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


@dataclass
class Launched:
    images: torch.Tensor  # the batch's uint8 images (host), kept for recomputation
    dests: list[dict[str, torch.Tensor]]  # per sample: level name -> host slot (C, H, W) float16
    finite: torch.Tensor  # (B,) bool on the host, valid once `done` has completed
    done: object = None  # CUDA event after the copies back, or None on CPU
    keep: list = field(default_factory=list)  # device tensors that must outlive the asynchronous copies


@dataclass
class Failure:
    position: int  # in the launched batch
    reason: str


class ComputeStage:
    def __init__(self, extractor, device: torch.device, batch_size: int, clock: StageClock,
                 channels_last: bool = True):
        self.fx, self.device, self.micro, self.clock = extractor, torch.device(device), batch_size, clock
        self.dtype = extractor.bb.dtype
        self.channels_last = channels_last
        self.cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if self.cuda else None
        self.recomputed = {"vae_fp32": 0, "full_fp32": 0}
        extractor.timer = clock

    # ------------------------------------------------------------------ one batch
    def launch(self, images: torch.Tensor, dests: list[dict[str, torch.Tensor]]) -> Launched:
        """Enqueue the batch; on out-of-memory halve the micro-batch and start it again."""
        while True:
            try:
                return self._launch(images, dests)
            except (torch.OutOfMemoryError, RuntimeError) as e:
                if not _is_oom(e) or self.micro == 1:
                    raise
                self.micro = max(1, self.micro // 2)
                if self.cuda:
                    torch.cuda.empty_cache()
                warnings.warn(f"out of memory: retrying at batch size {self.micro}", RuntimeWarning, stacklevel=2)

    def _launch(self, images: torch.Tensor, dests) -> Launched:
        n = images.shape[0]
        finite = torch.empty(n, dtype=torch.bool, pin_memory=self.cuda)
        out = Launched(images, dests, finite)
        for a in range(0, n, self.micro):
            feats, ok = self._features(images[a:a + self.micro])
            self._copy_back(feats, ok, dests[a:a + len(ok)], finite[a:a + len(ok)], out)
        if self.cuda:
            out.done = torch.cuda.Event()
            out.done.record(self.copy_stream)
        return out

    def _features(self, images: torch.Tensor) -> tuple[dict, torch.Tensor]:
        with self.clock.gpu("busy"):
            with self.clock.gpu("h2d"):
                x = to_model_input(images, self.device, self.dtype, self.channels_last)
            feats = self.fx(x)
            with self.clock.gpu("cast"):
                half = {k: v.to(STORED) for k, v in feats.items()}
                ok = torch.stack([torch.isfinite(v).flatten(1).all(1) for v in half.values()]).all(0)
        return half, ok

    def _copy_back(self, feats: dict, ok: torch.Tensor, dests, finite, out: Launched) -> None:
        if not self.cuda:
            with self.clock.host("d2h"):
                for j, d in enumerate(dests):
                    for name, slot in d.items():
                        slot.copy_(feats[name][j])
                finite.copy_(ok)
            return
        self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.copy_stream), self.clock.gpu("d2h", self.copy_stream):
            for j, d in enumerate(dests):
                for name, slot in d.items():
                    slot.copy_(feats[name][j], non_blocking=True)
            finite.copy_(ok, non_blocking=True)
        out.keep.append((feats, ok))

    def finish(self, launched: Launched) -> list[Failure]:
        """Wait for a launched batch; recompute non-finite samples in float32; return what still failed."""
        if launched.done is not None:
            with self.clock.host("wait_device"):
                launched.done.synchronize()
        launched.keep.clear()
        failures = []
        for j in torch.nonzero(~launched.finite).flatten().tolist():
            reason = self._recompute(launched.images[j:j + 1], launched.dests[j])
            if reason:
                failures.append(Failure(j, reason))
        return failures

    def _recompute(self, image: torch.Tensor, dest: dict) -> str | None:
        for full, counter in ((False, "vae_fp32"), (True, "full_fp32")):
            self.recomputed[counter] += 1
            x = to_model_input(image, self.device, torch.float32, self.channels_last)
            feats = self.fx.recompute_fp32(x, full=full)
            if all(bool(torch.isfinite(v).all()) for v in feats.values()):
                half = {k: v.to(STORED) for k, v in feats.items()}
                if not all(bool(torch.isfinite(v).all()) for v in half.values()):
                    peak = max(float(v.abs().max()) for v in feats.values())
                    return (f"its features reach {peak:.3g}, beyond float16's range (65504): they cannot be stored "
                            f"as float16 or int8 without loss")
                for name, slot in dest.items():
                    slot.copy_(half[name][0])
                return None
        return "its features are not finite even in float32 (NaN or inf): the image or the model is broken"
