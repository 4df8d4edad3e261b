"""Seconds spent per pipeline stage, measured where the work runs.

GPU stages are timed with CUDA events recorded on the stream doing the work (never a device-wide sync);
their durations are read once they have completed. Host stages use the wall clock of the thread doing
them. Totals go to the run report (`stage_seconds`), which `bench/extract_speed.py` reads.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager

import torch


class StageClock:
    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self.pending: list[tuple[str, object, object]] = []  # (stage, start event, end event)
        self.lock = threading.Lock()

    @contextmanager
    def gpu(self, stage: str, stream=None):
        """Time work enqueued on `stream` (the current stream by default) inside the block."""
        if not self.cuda:
            with self.host(stage):
                yield
            return
        stream = stream or torch.cuda.current_stream()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        yield
        end.record(stream)
        with self.lock:
            self.pending.append((stage, start, end))

    @contextmanager
    def host(self, stage: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t)

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] += seconds

    def collect(self) -> None:
        """Fold the durations of completed CUDA events into the totals (waits for pending ones)."""
        with self.lock:
            pending, self.pending = self.pending, []
        for stage, start, end in pending:
            end.synchronize()
            self.add(stage, start.elapsed_time(end) / 1000.0)

    def totals(self) -> dict[str, float]:
        self.collect()
        return dict(self.seconds)
