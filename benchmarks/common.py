"""What the benchmark's measurements share: R-Drop's settings, the clock and the dtype names."""

import time

import torch

#: label smoothing ε and R-Drop's α of every variant
EPS = 0.1
ALPHA = 5.0


def dtype_name(dtype):
    """``"float16"`` for ``torch.float16``."""
    return str(dtype).split(".")[-1]


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_of(fn, device):
    """Seconds ``fn()`` takes: CUDA events on CUDA, the wall clock elsewhere."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
