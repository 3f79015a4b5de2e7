"""Quantizing a model's linear layers with bitsandbytes (8-bit, or 4-bit nf4) as it loads, and what its kernels need
around that: memory of their own for the weights left unquantized, the generic 4-bit kernel where the fast one
cannot take a layer's shape, and gradients through 4-bit layers for training."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .devices import file_backed
from .errors import ModelLoadError, TrainingError
from .libraries import import_bitsandbytes

if TYPE_CHECKING:
    import torch


def config(quantize: str, dtype: "torch.dtype", device: "torch.device") -> Any:
    """The ``quantization_config`` a load takes for ``quantize`` (8bit or 4bit), its compute in ``dtype``."""
    if device.type == "mps":
        raise ModelLoadError("bitsandbytes quantization does not run on MPS; use --quantize none or the CPU.")
    try:
        from transformers import BitsAndBytesConfig

        import_bitsandbytes()
    except ImportError as exc:
        raise ModelLoadError(f"Quantizing needs bitsandbytes: pip install bitsandbytes ({exc}).") from exc
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)


def own_the_unquantized_weights(model: Any) -> None:
    """A quantized model keeps the weights bitsandbytes leaves alone (embeddings, norms) as views of its
    memory-mapped safetensors file, and those views kept the whole file, every page of it read while
    quantizing, resident: 1.9x the quantized model's size on the CPU. Copied into memory of their own, the
    file is let go."""
    for tensor in file_backed(list(model.parameters()) + list(model.buffers())):
        tensor.data = tensor.data.clone()


def keep_unpackable_layers_on_the_generic_kernel(model: Any) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit layer's weight for a faster kernel on its first
    no-grad call, and that repacking fails (an assertion, or a reshape error) unless the layer's output size
    is a multiple of 32 and its input size a multiple of the quantization block. Small models have such
    layers: they keep the generic 4-bit kernel, which takes any shape."""
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            state = module.weight.quant_state
            out_features, in_features = state.shape
            if out_features % 32 or in_features % state.blocksize:
                module.support_avx512bf16_for_cpu = False


def keep_4bit_layers_differentiable(loaded: Any) -> None:
    """Let gradients flow through ``loaded``'s (a :class:`fusers.pair.LoadedModel`) 4-bit layers on the CPU (training backpropagates through the
    frozen receiver). bitsandbytes' repacked AVX512-BF16 kernel has no autograd, so gradients through a
    repacked layer would silently be zero: layers stay on the generic kernel. A layer that inference has
    already repacked cannot be restored exactly, so that is an error."""
    if loaded.quantize != "4bit" or loaded.device.type != "cpu":
        return
    import bitsandbytes as bnb

    repacked = 0
    for module in loaded.model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            repacked += bool(getattr(module.weight.quant_state, "packing_format_for_cpu", False))
    if repacked:
        raise TrainingError(
            f"The {loaded.role} {loaded.source} has {repacked} 4-bit layers that bitsandbytes repacked for its fast "
            "CPU inference kernel, which cannot pass gradients back. Load the model again and train before "
            "answering with it (c2c train always does), or train without --quantize 4bit."
        )
