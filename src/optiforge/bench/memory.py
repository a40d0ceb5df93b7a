"""Peak tensor memory of a forward pass.

On CUDA the caching allocator keeps the figure. On CPU no allocator does, so
a dispatch mode follows every tensor an operator creates and frees (through
weak references to its storage) and keeps the peak of the live total.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _LiveTensorBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        result = func(*args, **(kwargs or {}))
        for value in tree_flatten(result)[0]:
            if isinstance(value, torch.Tensor) and not value.is_quantized and value.device.type == "cpu":
                storage = value.untyped_storage()
                key = storage.data_ptr()
                if key in self._seen or key == 0:
                    continue
                size = storage.nbytes()
                self._seen.add(key)
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._release, key, size)
        return result


def peak_forward_bytes(run: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated while ``run()`` executes (activations and workspace)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    if device.type != "cpu":
        return None
    tracker = _LiveTensorBytes()
    try:
        with tracker:
            result = run()
        del result
    except Exception:  # some quantized kernels refuse to run under a dispatch mode
        return None
    return int(tracker.peak)
