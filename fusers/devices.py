"""Device and dtype choice, clocks, and memory readings."""

from __future__ import annotations

import resource
import sys
from typing import TYPE_CHECKING

from .errors import ModelLoadError

if TYPE_CHECKING:  # torch is imported lazily: `c2c --help` and the app's first paint stay fast
    import torch

DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


def resolve_device(device: str = "auto") -> "torch.device":
    """Turn ``auto``/``cpu``/``cuda[:N]``/``mps`` into a usable ``torch.device`` (a GPU always by number)."""
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ModelLoadError(f"Unknown device {device!r}; use {DEVICES_HELP}.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"Device {device!r} was asked for but this torch build sees no CUDA GPU; "
            "use --device cpu, or install a CUDA build of torch."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ModelLoadError(
            f"Device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) are visible."
        )
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())  # by number: records and memory are per GPU
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError(f"Device {device!r} was asked for but MPS is not available here; use --device cpu.")
    return dev


def resolve_dtype(dtype: str, device: "torch.device") -> "torch.dtype":
    """``auto`` is float32 on the CPU and MPS, bfloat16 on CUDA."""
    import torch

    name = (dtype or "auto").strip().lower()
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ModelLoadError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}.")
    return table[name]


def dtype_name(dtype: "torch.dtype") -> str:
    return str(dtype).removeprefix("torch.")


def synchronize(device: "torch.device") -> None:
    """Wait for queued kernels so that clock readings mean something."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class PeakMemory:
    """Peak memory over a block: CUDA max allocated, or the process's peak RSS on the CPU.

    On Linux the RSS high-water mark is reset at the start (``clear_refs``), so the
    reading belongs to the block and not to the whole process's past.
    """

    def __init__(self, device: "torch.device"):
        self.device = device
        self.peak_bytes = 0

    def __enter__(self) -> "PeakMemory":
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_rss_peak()
        return self

    def read(self) -> int:
        import torch

        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return _rss_peak_bytes()

    def __exit__(self, *exc) -> None:
        self.peak_bytes = self.read()


def _reset_rss_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _rss_peak_bytes() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)

