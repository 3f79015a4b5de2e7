"""Device and dtype choice, clocks, and memory readings."""

from __future__ import annotations

import resource
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from .errors import ModelLoadError
from .vocabulary import DTYPES

if TYPE_CHECKING:  # torch is imported lazily: `c2c --help` and the app's first paint stay fast
    import torch

T = TypeVar("T")
U = TypeVar("U")
DEVICES_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


def resolve_device(device: str = "auto") -> "torch.device":
    """Turn ``auto``/``cpu``/``cuda[:N]``/``mps`` into a usable ``torch.device`` (a GPU always by number)."""
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return numbered(torch.device("cuda"))
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
    dev = numbered(dev)
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError(f"Device {device!r} was asked for but MPS is not available here; use --device cpu.")
    return dev


def numbered(device: "torch.device | str") -> "torch.device":
    """``device`` with a GPU named by its number (``cuda`` -> ``cuda:0``): records and memory are per GPU."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


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


def device_key(device: "torch.device") -> str:
    """A device as records name it: ``cpu``, ``cuda:0``, ``mps``."""
    return str(device)


def unique_devices(devices: "Iterable[torch.device]") -> "list[torch.device]":
    """``devices`` in order, each once."""
    out: list = []
    for device in devices:
        if device not in out:
            out.append(device)
    return out


def synchronize(*devices: "torch.device") -> None:
    """Wait for the kernels queued on every device given, so that clock readings mean something."""
    import torch

    for device in unique_devices(devices):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elif device.type == "mps":
            torch.mps.synchronize()


def overlapped(first: Callable[[], T], first_device: "torch.device", second: Callable[[], U],
               second_device: "torch.device") -> tuple[T, float, U, float]:
    """Run ``first`` in a worker thread and ``second`` on this thread at the same time; return each result with
    the ``time.perf_counter()`` at which its work was done.

    On a GPU ``first`` runs on a CUDA stream of its own, queued after what this thread had queued on its device
    (its inputs), so two models on one GPU overlap too; ``second`` runs on the current stream. Each end time is
    read once its own stream has finished, not the whole device. A later call's stream again waits for the
    current one, so memory ``first``'s results leave behind is never reused while the current stream reads it.
    An exception in either is raised here, the worker's first, after both have stopped.
    """
    import torch

    side = None
    if first_device.type == "cuda":
        side = torch.cuda.Stream(first_device)  # from torch's pool of streams
        side.wait_stream(torch.cuda.current_stream(first_device))
    outcome: dict[str, Any] = {}

    def done(device: "torch.device", stream: Any = None) -> float:
        if stream is not None:
            stream.synchronize()
        elif device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()
        elif device.type == "mps":
            torch.mps.synchronize()
        return time.perf_counter()

    def worker() -> None:
        try:
            if side is None:
                result = first()
            else:
                with torch.cuda.stream(side):
                    result = first()
            outcome["first"] = (result, done(first_device, side))
        except BaseException as exc:  # raised on the calling thread below
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name="c2c-overlapped", daemon=True)
    thread.start()
    try:
        second_result = second()
        second_end = done(second_device)
    finally:
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    first_result, first_end = outcome["first"]
    return first_result, first_end, second_result, second_end


class PeakMemory:
    """Peak memory over a block, per device: CUDA max allocated on each GPU; on the CPU (and MPS, whose memory
    is the host's) the process's peak RSS.

    On Linux the RSS high-water mark is reset at the start (``clear_refs``), so the
    reading belongs to the block and not to the whole process's past. ``peak_bytes`` is the first device's
    peak (the answering model's), ``by_device`` every device's, keyed by :func:`device_key`.
    """

    def __init__(self, *devices: "torch.device"):
        if not devices:
            raise ValueError("PeakMemory needs at least one device")
        self.devices = unique_devices(devices)
        self.by_device: dict[str, int] = {}

    @property
    def peak_bytes(self) -> int:
        return self.by_device.get(device_key(self.devices[0]), 0)

    def __enter__(self) -> "PeakMemory":
        import torch

        for device in self.devices:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        if any(device.type != "cuda" for device in self.devices):
            _reset_rss_peak()
        return self

    def read(self) -> dict[str, int]:
        import torch

        out: dict[str, int] = {}
        for device in self.devices:
            cuda = device.type == "cuda"
            out[device_key(device)] = int(torch.cuda.max_memory_allocated(device)) if cuda else _rss_peak_bytes()
        return out

    def __exit__(self, *exc) -> None:
        self.by_device = self.read()


def release_freed_memory() -> None:
    """Hand memory the process has freed back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Loading frees large temporary copies (a GGUF file's weights dequantized to float32, full-precision weights
    before quantizing): glibc keeps most of it in its heaps for reuse, so the process stayed 1.4-2.6x the
    models' size after loading. Collecting garbage is not done here: the app loads on its models' thread.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        trim = getattr(libc, "malloc_trim", None)
    except (OSError, AttributeError):
        return
    if trim is not None:
        trim(0)


def file_backed(tensors: "Iterable[torch.Tensor]") -> "list[torch.Tensor]":
    """Those of ``tensors`` whose memory is a memory-mapped file (Linux; none found elsewhere).

    transformers reads safetensors files through ``mmap``: a weight kept in the file's dtype stays a view of
    the file, and one such view keeps the whole mapping, and every page of it that loading touched, resident.
    """
    ranges = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/"):  # a file, not [heap], [stack] or anonymous
                    start, end = (int(x, 16) for x in parts[0].split("-"))
                    ranges.append((start, end))
    except OSError:
        return []
    return [t for t in tensors if t.device.type == "cpu" and any(a <= t.data_ptr() < b for a, b in ranges)]


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

