"""What the engine needs to know about the libraries under it, in one place: their noise, the options every
model load takes, and the names that changed between the transformers versions the project supports
(pyproject.toml's floor to the lock's version)."""

from __future__ import annotations

import functools
import logging
import warnings
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import Cache, PreTrainedModel

# Every from_pretrained of a model passes these. transformers >= 5.25 requires the `kernels` package and by
# default "kernelizes" each model it loads: it swaps layers for kernels fetched from the Hub at run time (a
# network request on every load, which fails offline) and refuses the meta device outright. The engine's
# maths is the model's own torch code, so kernels are off, on every version (older ones default to off).
LOAD_OPTIONS: dict[str, Any] = {"use_kernels": False}


def import_bitsandbytes() -> ModuleType:
    """``import bitsandbytes``, without the Hub.

    bitsandbytes >= 0.49 on a CPU with AVX512-BF16 asks the Hub for a 4-bit kernel (``kernels.get_kernel``,
    native code fetched at run time) as it is imported: one request per process that quantizes, which waits
    on a dead network, and the result would depend on the CPU. Hidden from ``kernels`` for that one import,
    it uses its own kernels, as it does on other CPUs and offline. Imported only when quantizing: ~3 s.
    """
    import sys

    if "bitsandbytes" in sys.modules:
        return sys.modules["bitsandbytes"]
    missing = object()
    saved = sys.modules.get("kernels", missing)
    sys.modules["kernels"] = None  # type: ignore[assignment]  # `from kernels import ...` raises ImportError
    try:
        import bitsandbytes
    finally:
        if saved is missing:
            del sys.modules["kernels"]
        else:
            sys.modules["kernels"] = saved  # type: ignore[assignment]
    return bitsandbytes


def import_peft() -> ModuleType:
    """``import peft``, without the Hub: peft imports bitsandbytes where it is installed, which would ask the Hub
    for a kernel (see :func:`import_bitsandbytes`), so bitsandbytes is imported first, the quiet way."""
    try:
        import_bitsandbytes()
    except ImportError:
        pass  # peft works without it (no quantized base)
    import peft

    return peft


def quiet_libraries() -> None:
    """Silence known-harmless noise (see platform-facts.md) so real warnings stay visible."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="bitsandbytes.autograd._functions")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def cache_kwargs(model: "PreTrainedModel", cache: "Cache") -> dict[str, "Cache"]:
    """The keyword that hands ``cache`` to ``model``'s forward (and so to ``generate``).

    transformers renamed ``past_key_values`` to ``cache``: older versions (the floor, 5.17) know only the old
    name and ``generate`` refuses the new one; newer ones warn on the old name and will drop it.
    """
    return {_cache_keyword(type(model)): cache}


@functools.lru_cache(maxsize=None)
def _cache_keyword(model_class: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"
