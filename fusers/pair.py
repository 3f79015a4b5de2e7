"""Loading a receiver and a sharer (and a fuser) as a pair."""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from . import gguf, quantization
from .chat import PLAIN_FORMAT_NAME, PLAIN_PROMPT_TEMPLATE, PLAIN_STOP_STRINGS
from .config import ConfigBase, option
from .devices import DEVICES_HELP, dtype_name, numbered, release_freed_memory, resolve_device, resolve_dtype
from .errors import C2CError, Cancelled, ModelLoadError, UnsupportedModelError
from .gguf import is_gguf
from .libraries import LOAD_OPTIONS, quiet_libraries
from .loading import LoadProgress, LoadSteps  # noqa: F401  (LoadProgress: importers of fusers.pair use it)
from .vocabulary import DTYPES, DTYPES_HELP, QUANTIZE

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from .fuser import Fuser, ModelShape
    from .static_decode import DecodePath, StaticDecoder
    from .team import TeamMember

# Attention layers that keep keys and values of their own in the cache: cache fusion fuses those.
OWN_KV_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")


@dataclass
class Placement(ConfigBase):
    """Where and how a model runs, without saying which model: what a load applies to the models a fuser names."""

    config_name: ClassVar[str] = "model placement"
    config_error: ClassVar[type[Exception]] = ModelLoadError

    device: str = option("auto", f"Device: {DEVICES_HELP}.")
    dtype: str = option("auto", f"{DTYPES_HELP}.", choices=DTYPES)
    quantize: str = option("none", f"{', '.join(QUANTIZE)} (nf4), through bitsandbytes.", choices=QUANTIZE)

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE:
            raise ModelLoadError(f"Unknown quantization {self.quantize!r}; use one of {', '.join(QUANTIZE)}.")

    def spec(self, source: str, adapter: str = "") -> "ModelSpec":
        """The model ``source`` placed here."""
        return ModelSpec(source, self.device, self.dtype, self.quantize, adapter)


def _placement_option(name: str) -> Any:
    """A :class:`Placement` field again, for :class:`ModelSpec` (its fields come first there: specs are built
    positionally, source first)."""
    f = next(f for f in dataclasses.fields(Placement) if f.name == name)
    return option(f.default, f.metadata["help"], choices=f.metadata.get("choices"))


@dataclass
class ModelSpec(ConfigBase):
    """Where a model comes from and how to place it."""

    config_name: ClassVar[str] = "model settings"
    config_error: ClassVar[type[Exception]] = ModelLoadError

    source: str = option("", "Hub id (Qwen/Qwen3-0.6B), a local folder with config, weights and tokenizer, or a "
                           ".gguf file.")
    device: str = _placement_option("device")
    dtype: str = _placement_option("dtype")
    quantize: str = _placement_option("quantize")
    adapter: str = option("", "A PEFT (LoRA) adapter folder to put on the model (empty: none). A source that is "
                            "itself an adapter folder names its base in adapter_config.json.")

    def __post_init__(self) -> None:
        self.source = str(self.source)
        self.adapter = str(self.adapter or "")
        if not self.source.strip():
            raise ModelLoadError("A model source is empty; give the receiver and the sharer each a Hub id or a "
                                 "local folder.")
        Placement.__post_init__(self)  # type: ignore[arg-type]  # the same checks of the same fields

    @property
    def placement(self) -> Placement:
        return Placement(self.device, self.dtype, self.quantize)


@dataclass
class LoadedModel:
    role: str  # "receiver" or "sharer"
    source: str
    model: "PreTrainedModel"
    tokenizer: Any
    device: "torch.device"
    dtype: "torch.dtype"  # compute dtype: what the KV cache holds
    quantize: str
    memory_bytes: int
    shape: ModelShape
    context_length: int
    eos_token_ids: list[int]
    fallback_template: bool = False  # no chat template of its own: plain Question:/Answer: turns
    stop_strings: tuple[str, ...] = ()  # text that ends an answer (where a base model starts the next turn)
    adapter: str = ""  # the PEFT adapter folder put on the base, if any (fusers.adapters)
    base: str = ""  # with an adapter: the base model it was put on (a GGUF file, a folder or a Hub id)
    decoder: "StaticDecoder | None" = None  # its static cache and captured decode step (prepare_decoding)
    decode_path: "DecodePath | None" = None  # how it decodes, as prepare_decoding found it

    @classmethod
    def from_model(cls, model: "PreTrainedModel", tokenizer: Any, role: str, source: str,
                   device: "torch.device", dtype: "torch.dtype", quantize: str = "none") -> "LoadedModel":
        """Wrap a model already in memory (benchmarks and recipes build theirs on the spot)."""
        from .fuser import ModelShape

        device = numbered(device)
        fallback = False
        if not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = PLAIN_PROMPT_TEMPLATE
            fallback = True
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token
        eos: set[int] = set()
        for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
            if isinstance(value, int):
                eos.add(value)
            elif isinstance(value, (list, tuple)):
                eos.update(int(v) for v in value)
        text_config = model.config.get_text_config()
        context = int(getattr(text_config, "max_position_embeddings", 0) or getattr(tokenizer, "model_max_length", 2048))
        return cls(
            role=role, source=source, model=model, tokenizer=tokenizer, device=device, dtype=dtype,
            quantize=quantize, memory_bytes=int(model.get_memory_footprint()), shape=ModelShape.of(model.config),
            context_length=context, eos_token_ids=sorted(eos), fallback_template=fallback,
            stop_strings=PLAIN_STOP_STRINGS if fallback else (),
        )

    @property
    def name(self) -> str:
        """A Hub id as given; a local folder by its name, with its parent's when the name alone says nothing
        more than the role (``demo/receiver``, not ``receiver receiver``)."""
        path = Path(self.source)
        if not path.exists():
            return self.source
        path = path.resolve()
        return f"{path.parent.name}/{path.name}" if path.name.lower() == self.role.lower() else path.name

    def describe(self) -> str:
        quant = "" if self.quantize == "none" else f", {self.quantize}"
        prompt = f"; no chat template: {PLAIN_FORMAT_NAME}" if self.fallback_template else ""
        name = self.name
        if self.adapter:  # "gemma-3-270m-q4_k_m.gguf + adapter specialist/adapter", not "adapter + adapter adapter"
            adapter = Path(self.adapter)
            label = f"{adapter.parent.name}/{adapter.name}" if adapter.name.lower() == "adapter" else adapter.name
            name = f"{Path(self.base).name if self.base else self.name} + adapter {label}"
        return (f"{self.role} {name}: {self.device}, {dtype_name(self.dtype)}{quant}, "
                f"{self.memory_bytes / 2**20:.1f} MiB, {self.shape.describe()}{prompt}")


@dataclass
class Pair:
    receiver: LoadedModel
    sharer: LoadedModel
    fuser: Fuser | None = None
    decode_paths: list["DecodePath"] = field(default_factory=list)  # what prepare_decoding found, to say once
    # a team (fusers.team): every sharer with its fuser, the first one also ``sharer``/``fuser``; empty for a pair
    members: list["TeamMember"] = field(default_factory=list)

    def describe(self) -> list[str]:
        if self.members:
            from .team import describe_team
            return describe_team(self)
        lines = [self.receiver.describe(), self.sharer.describe()]
        if self.fuser is not None:
            info = self.fuser.info
            links = ", ".join(f"{link.receiver_layer}<-{link.sharer_layer}" for link in self.fuser.layer_map)
            lines.append(
                f"fuser ({info.format}, {info.mapping}"
                + (f", aligned by {info.alignment_strategy} token" if info.is_do_alignment else "")
                + f", {self.fuser.parameter_count() / 1e6:.1f}M params): receiver<-sharer layers {links}"
            )
        if self.decode_paths:  # said once, where the load is reported
            from .static_decode import describe_paths

            lines.append("decoding: " + describe_paths(self.decode_paths))
        return lines

    def prepare_decoding(self, cuda_graphs: bool = True, compile: bool = True,
                         cancel: threading.Event | None = None) -> list["DecodePath"]:
        """Give each model on a CUDA device a static cache and a captured decode step (fusers.static_decode),
        and the fuser its captured passes (fusers.fuser_graphs); the others keep transformers' generate and the
        eager pass. ``compile``: compile each decode step (torch.compile) before capturing it. Returns what was
        decided for each, to be said once. ``cancel`` is checked between models (raises Cancelled)."""
        from .fuser_graphs import prepare_fuser
        from .static_decode import prepare

        paths = []
        for loaded in (self.receiver, *([m.sharer for m in self.members] or [self.sharer])):  # a team: every sharer
            if cancel is not None and cancel.is_set():
                raise Cancelled("Loading was cancelled.")
            loaded.decoder, loaded.decode_path = prepare(loaded.model, loaded.role, loaded.quantize != "none",
                                                         enabled=cuda_graphs, compile=compile)
            paths.append(loaded.decode_path)
        if self.fuser is not None and len(self.members) <= 1:  # a team's fusers run eagerly (fusers.team)
            paths.append(prepare_fuser(self.fuser, self.receiver, self.sharer, enabled=cuda_graphs))
        return paths

    def close(self, collect: bool = True) -> None:
        """Drop the models and give their memory back.

        ``collect=False`` skips ``gc.collect()``: a GUI calls this from its models' thread, where a
        collection could free GUI objects, and collects on its own thread instead.
        """
        import torch

        cuda = any(m.device.type == "cuda" for m in (self.receiver, self.sharer, *(t.sharer for t in self.members)))
        self.receiver = self.sharer = self.fuser = None  # type: ignore[assignment]
        self.members = []
        if collect:
            gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def load_model(spec: ModelSpec, role: str, progress: "gguf.TensorProgress | None" = None,
               cancel: threading.Event | None = None) -> LoadedModel:
    """Load one model with its tokenizer and chat template. A GGUF file converted first tells ``progress`` its
    tensors converted, and ``cancel`` stops the conversion (Cancelled)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from . import adapters

    quiet_libraries()
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    origin = adapters.resolve(spec.source, spec.adapter, role)  # a base, and maybe an adapter to put on it
    source = origin.base
    local = Path(source).expanduser()
    # accelerate places each weight on the device as it is read: no whole copy of the model on the host first
    kwargs: dict[str, Any] = {"dtype": dtype, "device_map": placement(device), **LOAD_OPTIONS}
    temporary: Path | None = None  # a GGUF file's converted folder when the cache could not keep it
    if is_gguf(source):
        from . import real_models

        local = real_models.prepare(local)  # the bundled Gemma file is assembled from its packages on first use
        if not local.is_file():
            raise ModelLoadError(f"The {role} GGUF file {local} does not exist.")
        # once (the file's header checked first); then read like any folder
        folder, is_temporary = gguf.convert(local, dtype_name(dtype), role, progress, cancel)
        source, temporary = str(folder), (folder if is_temporary else None)
    elif local.exists():
        if not (local / "config.json").is_file():
            raise ModelLoadError(f"The {role} folder {local} has no config.json; point to a saved model folder, "
                                 "or to a .gguf file.")
        source = str(local)
    elif source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelLoadError(f"The {role} folder {source} does not exist.")
    elif not _in_hub_cache(source):
        from .sources import check_hub_reachable

        check_hub_reachable(role, source)  # at once where it cannot be, not after the Hub client's retries

    if spec.quantize != "none":
        kwargs["quantization_config"] = quantization.config(spec.quantize, dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except C2CError:
        raise
    except Exception as exc:  # transformers and the Hub raise many types; turn them into one readable error
        raise ModelLoadError(_explain_load_failure(role, spec.source, exc)) from exc
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)  # loaded weights no longer need their files
    if spec.quantize != "none":
        quantization.own_the_unquantized_weights(model)
    if origin.adapter is not None:
        model = adapters.apply(model, origin.adapter, role, origin.base, quantized=spec.quantize != "none")
    if spec.quantize == "4bit" and device.type == "cpu":
        quantization.keep_unpackable_layers_on_the_generic_kernel(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    release_freed_memory()  # what dequantizing and quantizing freed goes back to the system, not to the allocator

    loaded = LoadedModel.from_model(model, tokenizer, role, spec.source, device, dtype, spec.quantize)
    loaded.adapter = str(origin.adapter) if origin.adapter is not None else ""
    loaded.base = origin.base if origin.adapter is not None else ""
    return loaded


def _in_hub_cache(repo_id: str) -> bool:
    """Whether a Hub id's model is in the local Hugging Face cache (its config, at least)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - not a valid repo id: the load says what is wrong with it
        return False


def placement(device: "torch.device | str") -> dict[str, str]:
    """The ``device_map`` that puts a whole model on ``device``, weight by weight as it loads."""
    return {"": str(device)}


def load_pair(
    receiver: ModelSpec | str | os.PathLike[str] | None,
    sharer: ModelSpec | str | os.PathLike[str] | None,
    fuser: str | Path | None = None,
    *,
    progress: Callable[[LoadProgress], None] | None = None,
    cancel: threading.Event | None = None,
    defaults: Placement | None = None,
    warm_up: Callable[[Pair, threading.Event | None], None] | None = None,
    cuda_graphs: bool = True,
    compile: bool = True,
) -> Pair:
    """Load a pair. With a fuser, a receiver or sharer left out comes from the fuser's record of its pair.

    A model is a :class:`ModelSpec`, or its source alone (a Hub id, a folder or a .gguf file, as a string or a
    path), placed as ``defaults`` say; ``defaults`` also places the models named only by the fuser.

    ``warm_up`` is the load's last step, given by the caller (:func:`fusers.engine.warm_up`: a short answer in
    each mode, so that the first real run is timed fairly); taking it as an argument keeps this module below
    the engine, which answers with a loaded pair. Models on a CUDA device then decode on static caches in CUDA
    graphs, captured as a step of the load (``cuda_graphs=False`` keeps transformers' generate), each step
    compiled first (``compile=False``: captured as transformers runs it); ``Pair.decode_paths`` says what each
    model got. Cancel is checked between models, and between the tensors of a GGUF file being converted; a
    cancelled load frees what it loaded and raises Cancelled. A step that counts its work (GGUF conversion)
    reports it as it goes.
    """
    from .checkpoint import load_fuser
    from .sources import local_source
    from .team import is_team, sources_of

    if is_team(fuser):  # a team folder: its receiver and every sharer with its fuser (fusers.team)
        team_receiver, team_sharers = sources_of(fuser, defaults or Placement(), sharer)
        return load_team(_as_spec(receiver, "receiver", defaults) or team_receiver, team_sharers, progress=progress,
                         cancel=cancel, defaults=defaults, warm_up=warm_up, cuda_graphs=cuda_graphs, compile=compile)
    receiver, sharer = _as_spec(receiver, "receiver", defaults), _as_spec(sharer, "sharer", defaults)
    # capturing CUDA graphs is a step of its own where a model goes onto a GPU
    if isinstance(warm_up, bool):
        raise TypeError("warm_up takes the step to run (fusers.engine.warm_up) or None, not a bool")
    placement = defaults or Placement()
    capture = cuda_graphs and any(resolve_device((spec or placement).device).type == "cuda"
                                  for spec in (receiver, sharer))
    total = 2 + (fuser is not None) + (warm_up is not None) + capture
    report = LoadSteps(total, progress, cancel)
    within = report.within

    loaded_fuser = None
    if fuser is not None:
        report(f"Reading fuser {fuser}")
        loaded_fuser = load_fuser(fuser)
        # a name the project's own fusers record stands for the folder or file it ships as
        if receiver is None:
            receiver = placement.spec(local_source(loaded_fuser.info.receiver))
        if sharer is None:
            sharer = placement.spec(local_source(loaded_fuser.info.sharer))
    if receiver is None or sharer is None:
        raise ModelLoadError("Give both a receiver and a sharer, or a fuser that names them.")

    for spec, role in ((receiver, "receiver"), (sharer, "sharer")):  # a bad file fails before minutes of loading
        _check_model_file(spec, role)
    report(message := _loading_message("receiver", receiver))
    r = load_model(receiver, "receiver", within(message), cancel)
    report(message := _loading_message("sharer", sharer))  # a cancel here drops the receiver with this frame
    s = load_model(sharer, "sharer", within(message), cancel)
    pair = Pair(r, s, None)
    if loaded_fuser is not None:
        check_cache_layout(r)
        check_cache_layout(s)
        loaded_fuser.check_pair(r.shape, s.shape, r.source, s.source)
        pair.fuser = loaded_fuser.to(device=r.device, dtype=r.dtype)
    return finish_loading(pair, report, capture=capture, cuda_graphs=cuda_graphs, compile=compile, warm_up=warm_up,
                          cancel=cancel, progress=progress, total=total)


def finish_loading(pair: Pair, report: Callable[[str], None], *, capture: bool, cuda_graphs: bool, compile: bool,
                   warm_up: Callable[[Pair, threading.Event | None], None] | None, cancel: threading.Event | None,
                   progress: Callable[[LoadProgress], None] | None, total: int) -> Pair:
    """Loading's last steps, a pair's or a team's: decoding paths (CUDA graphs where on a GPU), warm-up, "Ready"."""
    if capture:
        on_gpu = sorted({m.role for m in (pair.receiver, pair.sharer, *(t.sharer for t in pair.members))
                         if m.device.type == "cuda"}, key=lambda role: (role != "receiver", role))
        report(("Compiling and capturing" if compile else "Capturing")
               + f" CUDA graphs for the {' and the '.join(on_gpu)}")
    pair.decode_paths = pair.prepare_decoding(cuda_graphs, compile, cancel)
    if warm_up is not None:
        report("Warming up: a short first answer in each mode")
        warm_up(pair, cancel)
        if cancel is not None and cancel.is_set():
            raise Cancelled("Loading was cancelled.")
    if progress is not None:
        progress(LoadProgress(total, total, "Ready"))
    return pair


def load_team(receiver: ModelSpec | None, sharers: list[Any], **options: Any) -> Pair:
    """A team, as :func:`fusers.team.load_team` loads it, given this module's loading pieces (it imports none)."""
    from types import SimpleNamespace

    from . import sources, team
    return team.load_team(receiver, sharers, kit=SimpleNamespace(**globals(), local_source=sources.local_source),
                          **options)


def _as_spec(model: Any, role: str, defaults: Placement | None) -> ModelSpec | None:
    """A model given to :func:`load_pair` as its spec: a spec as it is, a source string or path with ``defaults``'
    placement."""
    if model is None or isinstance(model, ModelSpec):
        return model
    if isinstance(model, (str, os.PathLike)):
        return (defaults or Placement()).spec(os.fspath(model))
    raise ModelLoadError(f"The {role} is a {type(model).__name__}; give a ModelSpec, or its source as a string or a "
                         f"path (a Hub id, a local folder or a .gguf file), e.g. load_pair(\"path/to/receiver\", "
                         "\"path/to/sharer\", fuser).")


def check_cache_layout(loaded: LoadedModel) -> None:
    """Raise :class:`UnsupportedModelError` unless every layer of ``loaded`` keeps its own keys and values.

    Sliding-window layers are fine (caches keep every position, see ``generation.new_cache``); linear
    attention or state-space layers hold no per-position keys, and shared-KV layers (Gemma-3n) reuse
    another layer's, so a fuser has nothing of theirs to read or write.
    """
    config = loaded.model.config.get_text_config()
    types = list(getattr(config, "layer_types", None) or getattr(config, "layers_block_type", None) or [])
    odd = sorted({str(t) for t in types} - set(OWN_KV_LAYER_TYPES) - {"attention"})
    shared = int(getattr(config, "num_kv_shared_layers", 0) or 0)
    if odd or shared:
        what = (f"{sum(str(t) in odd for t in types)} layers of type {', '.join(odd)}" if odd
                else f"{shared} layers that share another layer's keys and values (num_kv_shared_layers)")
        raise UnsupportedModelError(
            f"Cache fusion cannot use the {loaded.role} {loaded.source}: it has {what}, which keep no keys and "
            "values of their own for a fuser to read or write. Load it without a fuser (receiver, sharer and "
            "text relay work), or pick a model whose layers are all attention layers."
        )


def _check_model_file(spec: ModelSpec, role: str) -> None:
    """A .gguf source (or an adapter's .gguf base) that is no GGUF file: ModelFileError, before anything loads."""
    from . import adapters

    base = Path(adapters.resolve(spec.source, spec.adapter, role).base).expanduser()
    if is_gguf(base) and base.is_file():
        gguf.check_file(base, role)


def _loading_message(role: str, spec: ModelSpec) -> str:
    if is_gguf(spec.source):
        local = Path(spec.source).expanduser()
        dtype = dtype_name(resolve_dtype(spec.dtype, resolve_device(spec.device)))
        if not (local.is_file() and gguf.is_converted(local, dtype)):  # the first load takes a minute: say why
            return (f"Loading {role} {local.name} (GGUF: converting it once into a plain model folder in "
                    f"{gguf.cache_root()}; later loads read that folder)")
    return f"Loading {role} {spec.source}"


def _explain_load_failure(role: str, source: str, exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    lowered = text.lower()
    first_line = text.splitlines()[0][:300]
    if "gated" in lowered or "401" in lowered or "403" in lowered or "unauthorized" in lowered:
        return (f"The {role} {source} is gated or needs a login ({first_line}). Accept its licence on the Hub, then "
                "log in with `hf auth login` or set HF_TOKEN.")
    if "offline" in lowered or "localentrynotfound" in lowered or "connection" in lowered or "resolve" in lowered:
        return (f"The {role} {source} is not in the local cache and the Hub cannot be reached ({first_line}). "
                "Download it first while online, or point to a local folder.")
    if "not a valid model identifier" in lowered or "repository not found" in lowered or "404" in lowered:
        return f"The {role} {source} was not found on the Hub or on disk ({first_line}). Check the id or the folder."
    if "out of memory" in lowered:
        return (f"Not enough memory to load the {role} {source} ({first_line}). Try --quantize 4bit, a smaller "
                "model, or the CPU.")
    return f"Could not load the {role} {source}: {first_line}"
