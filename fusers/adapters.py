"""Models made of a base and a PEFT adapter (LoRA): a fine-tuned specialist that ships as a few MB.

A model source is a base plus an adapter when either

* the source is an adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, as
  ``peft``'s ``save_pretrained`` writes them), whose ``base_model_name_or_path`` names the base: a Hub
  id, a folder (absolute, or relative to the adapter folder), a ``.gguf`` file, or the file name of one
  of the two bundled real models (``fusers.real_models``); or
* an adapter is given beside the base (``--sharer BASE --sharer-adapter FOLDER``), which overrides the
  base the adapter names.

Adapter weights are read from safetensors only (a pickle never loads). The adapter is merged into the
base weights at load (``merge_and_unload``): inference then runs at the base model's speed, with no
extra matmuls per layer. On a 4- or 8-bit base the adapter stays beside the quantized weights instead
(peft's LoRA layers for bitsandbytes): merging would round the adapter's small update into the
quantization grid.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .errors import AdapterError, AdapterMismatchError, ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: a base, and the adapter folder put on it (None: the base alone)."""

    base: str
    adapter: Path | None = None


def is_adapter_folder(source: str | Path) -> bool:
    path = Path(source).expanduser()
    return path.is_dir() and (path / CONFIG_NAME).is_file() and not (path / "config.json").is_file()


def read_config(folder: Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``; AdapterError when it is missing or not JSON."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise AdapterError(f"The adapter folder {folder} has no {CONFIG_NAME}; give a folder written by peft's "
                           "save_pretrained.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path} is not a readable JSON file ({exc}).") from None
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise AdapterError(f"{path} is not a PEFT adapter config (it has no peft_type).")
    return config


def resolve(source: str, adapter: str | Path | None, role: str) -> ModelSource:
    """The base and the adapter that ``source`` (and an explicit ``adapter``) name."""
    if adapter:
        folder = Path(adapter).expanduser()
        if not folder.is_dir():
            raise AdapterError(f"The {role} adapter folder {folder} does not exist.")
        read_config(folder)
        base = _bundled_or(source) if source and not is_adapter_folder(source) else base_of(folder, role)
        return ModelSource(base, folder)
    if is_adapter_folder(source):
        folder = Path(source).expanduser()
        return ModelSource(base_of(folder, role), folder)
    return ModelSource(_bundled_or(source))


def _bundled_or(name: str) -> str:
    """A bundled model's recorded name (``SmolLM2-135M-Instruct.Q4_1.gguf``, ``c2c-demo/receiver``) as its installed
    path; any other source as it is (fusers.sources.local_source)."""
    from .sources import local_source

    return local_source(name)


def base_of(folder: Path, role: str) -> str:
    """The base model an adapter folder names, as a source ``load_model`` reads."""
    name = read_config(folder).get("base_model_name_or_path")
    if not isinstance(name, str) or not name.strip():
        raise AdapterError(f"The {role} adapter {folder} does not name its base model (base_model_name_or_path is "
                           f"empty); give the base too: --{role} BASE --{role}-adapter {folder}.")
    path = Path(name).expanduser()
    if not path.is_absolute() and (folder / path).exists():
        return str((folder / path).resolve())  # a base shipped beside its adapter
    return _bundled_or(name)


def apply(model: "PreTrainedModel", folder: Path, role: str, base: str, quantized: bool) -> "PreTrainedModel":
    """Put the adapter in ``folder`` on ``model``: merged into its weights, or (``quantized``) beside them.

    Raises AdapterMismatchError, naming the adapter and the base, when the adapter's target modules
    are not in the model or its weights have other shapes than the model's layers need.
    """
    from .libraries import import_peft

    try:
        peft = import_peft()
        from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    except ImportError as exc:
        raise ModelLoadError(f"Loading the {role} adapter {folder} needs peft: pip install peft ({exc}).") from exc
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        if (folder / PICKLE_NAME).is_file():
            raise AdapterError(
                f"The {role} adapter {folder} holds {PICKLE_NAME}, a pickle that could run code, and no {WEIGHTS_NAME}; "
                "it is not loaded. Save the adapter with safetensors (peft's save_pretrained does by default)."
            )
        raise AdapterError(f"The {role} adapter folder {folder} has no {WEIGHTS_NAME}.")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{weights} is not a readable safetensors file ({exc}).") from None
    try:
        config = peft.PeftConfig.from_pretrained(str(folder))
    except (TypeError, ValueError) as exc:
        raise AdapterError(f"The {role} adapter config in {folder} cannot be read by peft {peft.__version__}: "
                           f"{_first_line(exc)}") from None
    config.inference_mode = True
    where = f"the {role} adapter {folder} does not fit the base {base}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
            wrapped = peft.PeftModel(model, config)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        raise AdapterMismatchError(f"{where.capitalize()}: {_first_line(exc)}") from None
    expected = {k: tuple(v.shape) for k, v in
                get_peft_model_state_dict(wrapped, save_embedding_layers=False).items()}
    given = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected.keys())
    wrong = [f"{k} is {given[k]}, the base needs {expected[k]}" for k in sorted(expected.keys() & given.keys())
             if given[k] != expected[k]]
    if wrong:
        raise AdapterMismatchError(f"{where.capitalize()}: {len(wrong)} tensors have other shapes ({wrong[0]}).")
    if missing or unexpected:
        keys = unexpected or missing
        raise AdapterMismatchError(
            f"{where.capitalize()}: {len(unexpected)} of its tensors name layers the base does not have and "
            f"{len(missing)} layers get no weights (e.g. {keys[0]})."
        )
    set_peft_model_state_dict(wrapped, state)
    if quantized:
        return wrapped.get_base_model()  # LoRA layers beside the bitsandbytes weights
    return wrapped.merge_and_unload()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def adapter_names(model: "PreTrainedModel") -> list[str]:
    """The LoRA adapters held beside ``model``'s weights (not merged), in the order they were loaded."""
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            return list(module.lora_A.keys())
    return []


@contextlib.contextmanager
def adapter_rows(model: "PreTrainedModel", names: "Sequence[str | None] | None") -> "Iterator[None]":
    """Inside it, each row of ``model``'s batch runs through the LoRA adapter named for it (peft's mixed adapter
    batches: every adapter beside one copy of the base weights); a None row runs through the active one. With
    ``names`` None, nothing changes. Used to train a fuser on a sharer whose adapter switches from one example
    to the next."""
    if names is None:
        yield
        return
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    held = layers[0].lora_A.keys() if layers else set()
    unknown = sorted({n for n in names if n is not None} - set(held))
    if unknown:
        raise AdapterError(f"The sharer holds no adapter named {', '.join(map(repr, unknown))} (it holds "
                           f"{', '.join(map(repr, held)) or 'none'}); load it beside the others first.")
    rows = [n if n is not None else layers[0].active_adapters[0] for n in names]

    def pre_hook(module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return args, {**kwargs, "adapter_names": rows}

    hooks = [m.register_forward_pre_hook(pre_hook, with_kwargs=True) for m in layers]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
