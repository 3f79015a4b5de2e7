"""Reading and writing fusers: the published layout and our own format.

Published (``nics-efc/C2C_Fuser``)::

    PAIR/config.json                     training recipe: pair ids, alignment, mapping
    PAIR/final/projector_config.json     layer map
    PAIR/final/projector_{i}.json        {"class": "C2CProjector", "init_args": {...}}
    PAIR/final/projector_{i}.pt          state dict (loaded with weights_only=True)

Ours (one folder)::

    fuser.json            sorted JSON manifest with a format version
    fuser.safetensors     weights, keys ``projectors.{i}.{name}``

Checkpoints are untrusted: no pickle runs code, and missing or unexpected
keys and wrong shapes are errors.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import FuserFormatError, UnsafeCheckpointError
from .fuser import Fuser, FuserInfo
from .layer_map import MAPPINGS, LayerLink
from .projector import C2CProjector, ProjectorConfig

MANIFEST_NAME = "fuser.json"
WEIGHTS_NAME = "fuser.safetensors"
FORMAT_NAME = "c2c-playground-fuser"
FORMAT_VERSION = 1

PUBLISHED_CONFIG = "config.json"
PUBLISHED_DIR = "final"
PUBLISHED_MAP = "projector_config.json"
PUBLISHED = "published"
OURS = "c2c-playground"


def detect_format(path: str | Path) -> str:
    """``"published"`` or ``"c2c-playground"``; raises if ``path`` is neither."""
    path = Path(path)
    if not path.exists():
        raise FuserFormatError(f"Fuser folder {path} does not exist; give a fuser folder or a downloaded pair name.")
    if not path.is_dir():
        raise FuserFormatError(f"{path} is a file; a fuser is a folder (published pair or {MANIFEST_NAME} + weights).")
    if (path / MANIFEST_NAME).is_file():
        return OURS
    if (path / "team.json").is_file():  # fusers.team.TEAM_MANIFEST (not imported: the team module reads fusers)
        raise FuserFormatError(f"{path} is a team folder (team.json), not one fuser: give it as --fuser to c2c compare "
                               "or as --pair to c2c-playground; each of its fusers is a folder that team.json names.")
    if (path / PUBLISHED_DIR / PUBLISHED_MAP).is_file() or (path / PUBLISHED_CONFIG).is_file():
        return PUBLISHED
    if path.name == PUBLISHED_DIR and (path.parent / PUBLISHED_CONFIG).is_file():
        return PUBLISHED
    raise FuserFormatError(
        f"{path} holds no fuser: expected {MANIFEST_NAME} (our format) or {PUBLISHED_CONFIG} with "
        f"{PUBLISHED_DIR}/{PUBLISHED_MAP} (published format)."
    )


def load_fuser(path: str | Path, device: "torch.device | str" = "cpu", dtype: torch.dtype | None = None) -> Fuser:
    """Load a fuser in either format; ``dtype=None`` keeps the stored dtype."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == PUBLISHED and path.name == PUBLISHED_DIR:
        path = path.parent
    fuser = _load_published(path) if fmt == PUBLISHED else _load_ours(path)
    fuser.to(device=device, dtype=dtype) if dtype is not None else fuser.to(device=device)
    fuser.eval()
    return fuser


# -- our format ---------------------------------------------------------------------------------------------

def save_fuser(fuser: Fuser, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``fuser.json`` + ``fuser.safetensors`` into ``path`` (created if needed)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    info = fuser.info
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        **fuser.manifest(),
        "projectors": [p.config.to_dict() for p in fuser.projectors],
        "extra": {**info.extra, **(extra or {})},
    }
    tensors = {
        f"projectors.{i}.{name}": t.detach().to("cpu").contiguous()
        for i, p in enumerate(fuser.projectors)
        for name, t in p.state_dict().items()
    }
    tmp = path / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)})
    tmp.replace(path / WEIGHTS_NAME)
    (path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def _load_ours(path: Path) -> Fuser:
    manifest = _read_json(path / MANIFEST_NAME)
    if manifest.get("format") != FORMAT_NAME:
        raise FuserFormatError(f"{path / MANIFEST_NAME} is not a {FORMAT_NAME} manifest (format={manifest.get('format')!r}).")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise FuserFormatError(
            f"{path / MANIFEST_NAME} has format version {version!r}; this C2C Playground reads version "
            f"{FORMAT_VERSION}. Upgrade c2c-playground, or convert the fuser again."
        )
    try:
        layer_map = [LayerLink(int(t), int(s), int(i)) for t, s, i in manifest["layer_map"]]
        configs = [_projector_config(args, f"{path / MANIFEST_NAME} projector {i}") for i, args in
                   enumerate(manifest["projectors"])]
        alignment = manifest.get("alignment", {})
        info = FuserInfo(
            receiver=str(manifest["receiver"]),
            sharer=str(manifest["sharer"]),
            receiver_layers=int(manifest["receiver_layers"]),
            sharer_layers=None if manifest.get("sharer_layers") is None else int(manifest["sharer_layers"]),
            mapping=str(manifest.get("mapping", "custom")),
            is_do_alignment=bool(alignment.get("enabled", False)),
            alignment_strategy=str(alignment.get("strategy", "first")),
            format=OURS,
            source=str(path),
            extra=dict(manifest.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a section of the wrong JSON type
        raise FuserFormatError(f"{path / MANIFEST_NAME} is malformed ({type(exc).__name__}: {exc}).") from exc

    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FuserFormatError(f"{weights} is missing; the fuser folder is incomplete.")
    from safetensors import SafetensorError, safe_open

    per_projector: list[dict[str, torch.Tensor]] = [{} for _ in configs]
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as fh:
            for key in fh.keys():
                head, _, name = key.partition(".")
                index, _, name = name.partition(".")
                if head != "projectors" or not index.isdigit() or int(index) >= len(configs):
                    raise FuserFormatError(f"{weights} has an unexpected tensor {key!r}.")
                per_projector[int(index)][name] = fh.get_tensor(key)
    except SafetensorError as exc:
        raise FuserFormatError(f"{weights} is truncated or corrupt ({exc}); write or download it again.") from exc
    projectors = [_build_projector(cfg, sd, f"{weights} projector {i}") for i, (cfg, sd) in
                  enumerate(zip(configs, per_projector))]
    return _make_fuser(projectors, layer_map, info, path)


# -- published format ---------------------------------------------------------------------------------------

def _load_published(path: Path) -> Fuser:
    config = _read_recipe(path / PUBLISHED_CONFIG)
    model = config.get("model")
    if not isinstance(model, dict):
        if "model_type" in config or "architectures" in config:
            raise FuserFormatError(
                f"{path} holds a model, not a fuser; pass it as --receiver or --sharer, and give the fuser folder "
                "(config.json with final/, or fuser.json) as --fuser."
            )
        raise FuserFormatError(f"{path / PUBLISHED_CONFIG} has no 'model' section; it is not a published fuser.")
    final = path / PUBLISHED_DIR
    raw_map = _read_json(final / PUBLISHED_MAP)
    try:
        links = raw_map["0"]["1"]
        layer_map = []
        for receiver_layer, pairs in links.items():
            sharer_layer, fuser_index = pairs[0]  # the reference uses the first pair of each list
            layer_map.append(LayerLink(int(receiver_layer), int(sharer_layer), int(fuser_index)))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise FuserFormatError(
            f"{final / PUBLISHED_MAP} is malformed ({exc!r}); expected {{'0': {{'1': {{layer: [[sharer_layer, i]]}}}}}}."
        ) from exc
    if not layer_map:
        raise FuserFormatError(f"{final / PUBLISHED_MAP} maps no layers.")
    layer_map.sort(key=lambda link: link.receiver_layer)
    indices = sorted({link.fuser_index for link in layer_map})
    on_disk = sorted(int(p.stem.split("_")[1]) for p in final.glob("projector_*.pt") if p.stem.split("_")[1].isdigit())
    missing = [i for i in indices if i not in on_disk]
    if missing:
        raise FuserFormatError(
            f"{final} is missing projector_{missing[0]}.pt" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "; the download is incomplete. Download the pair again."
        )
    unused = [i for i in on_disk if i not in indices]
    if unused:
        raise FuserFormatError(f"{final} has projector_{unused[0]}.pt, which the layer map does not use.")
    if indices != list(range(len(indices))):
        raise FuserFormatError(f"{final / PUBLISHED_MAP} uses fuser indices {indices}; expected 0..{len(indices) - 1}.")

    projectors = []
    for i in indices:
        meta = _read_json(final / f"projector_{i}.json")
        if meta.get("class") != "C2CProjector":
            raise FuserFormatError(
                f"{final / f'projector_{i}.json'} holds class {meta.get('class')!r}; only C2CProjector is supported."
            )
        init_args = meta.get("init_args", {})
        if not isinstance(init_args, dict):
            raise FuserFormatError(f"{final / f'projector_{i}.json'}: init_args should be an object of projector "
                                   f"arguments, not {type(init_args).__name__}.")
        args = {k: _decode_typed(v) for k, v in init_args.items()}
        args.pop("device", None)  # where it was trained; placement is decided at load
        cfg = _projector_config(args, str(final / f"projector_{i}.json"))
        state = _load_pt(final / f"projector_{i}.pt")
        projectors.append(_build_projector(cfg, state, str(final / f"projector_{i}.pt")))

    mapping = str(model.get("mapping", "last_aligned"))
    try:
        info = FuserInfo(
            receiver=str(model.get("base_model", "?")),
            sharer=str(model.get("teacher_model", "?")),
            receiver_layers=max(link.receiver_layer for link in layer_map) + 1,
            sharer_layers=None,
            mapping=mapping if mapping in MAPPINGS else "custom",
            is_do_alignment=bool(model.get("is_do_alignment", False)),
            alignment_strategy=str(model.get("alignment_strategy", "first")),
            format=PUBLISHED,
            source=str(path),
        )
    except ValueError as exc:
        raise FuserFormatError(f"{path / PUBLISHED_CONFIG}: {exc}") from exc
    return _make_fuser(projectors, layer_map, info, path)


def save_published(fuser: Fuser, path: str | Path) -> Path:
    """Write ``fuser`` in the published layout (``config.json`` + ``final/``)."""
    path = Path(path)
    final = path / PUBLISHED_DIR
    final.mkdir(parents=True, exist_ok=True)
    info = fuser.info
    first = fuser.projectors[0].config.to_dict()
    recipe = {
        "model": {
            "base_model": info.receiver,
            "teacher_model": info.sharer,
            "is_do_alignment": info.is_do_alignment,
            "alignment_strategy": info.alignment_strategy,
            "mapping": info.mapping,
            "projector": {"type": "C2CProjector", "params": _encode_args(first)},
        }
    }
    (path / PUBLISHED_CONFIG).write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    layer_map = {str(link.receiver_layer): [[link.sharer_layer, link.fuser_index]] for link in fuser.layer_map}
    (final / PUBLISHED_MAP).write_text(json.dumps({"0": {"1": layer_map}}, indent=2) + "\n")
    for i, proj in enumerate(fuser.projectors):
        meta = {"class": "C2CProjector", "init_args": _encode_args(proj.config.to_dict())}
        (final / f"projector_{i}.json").write_text(json.dumps(meta, indent=2) + "\n")
        # copies: a fuser that has fused holds its weights as views of stacks, and torch.save writes a view's
        # whole storage
        state = {k: v.detach().to("cpu", copy=True) for k, v in proj.state_dict().items()}
        torch.save(state, final / f"projector_{i}.pt")
    return path


def convert(src: str | Path, dst: str | Path, to: str | None = None) -> tuple[str, str]:
    """Convert a fuser between formats; ``to=None`` picks the other format. Returns (from, to)."""
    src_format = detect_format(src)
    target = to or (OURS if src_format == PUBLISHED else PUBLISHED)
    if target not in (OURS, PUBLISHED):
        raise FuserFormatError(f"Unknown target format {to!r}; use {OURS} or {PUBLISHED}.")
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()):
        raise FuserFormatError(f"{dst} exists and is not empty; choose a new folder so nothing is overwritten.")
    fuser = load_fuser(src)
    if target == OURS:
        save_fuser(fuser, dst, extra={"converted_from": {"format": src_format, "path": str(Path(src).resolve())}})
    else:
        save_published(fuser, dst)
    return src_format, target


# -- helpers -------------------------------------------------------------------------------------------------

def _make_fuser(projectors: list[C2CProjector], layer_map: list[LayerLink], info: FuserInfo, path: Path) -> Fuser:
    try:
        return Fuser(projectors, layer_map, info)
    except ValueError as exc:
        raise FuserFormatError(f"{path}: {exc}") from exc


def _projector_config(args: dict[str, Any], where: str) -> ProjectorConfig:
    try:
        return ProjectorConfig.from_dict(dict(args))
    except (TypeError, ValueError) as exc:
        raise FuserFormatError(f"{where}: bad projector arguments: {exc}") from exc


def _build_projector(cfg: ProjectorConfig, state: dict[str, torch.Tensor], where: str) -> C2CProjector:
    with torch.device("meta"):
        proj = C2CProjector(cfg)
    expected = {k: v.shape for k, v in proj.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        raise FuserFormatError(f"{where} does not match its projector arguments: {'; '.join(parts)}.")
    for name, shape in expected.items():
        if not isinstance(state[name], torch.Tensor):
            raise FuserFormatError(f"{where}: {name} is not a tensor.")
        if tuple(state[name].shape) != tuple(shape):
            raise FuserFormatError(
                f"{where}: {name} has shape {tuple(state[name].shape)}, the projector arguments imply {tuple(shape)}."
            )
        if not state[name].is_floating_point():
            raise FuserFormatError(f"{where}: {name} holds {str(state[name].dtype).removeprefix('torch.')} values; "
                                   "a fuser's weights are floating point. The file is damaged or not a fuser.")
        if not bool(torch.isfinite(state[name]).all()):
            # a fuser of NaNs would silently turn every fused answer into noise
            raise FuserFormatError(f"{where}: {name} holds NaN or Inf values; the fuser is broken (a diverged "
                                   "training run, or a damaged file). Train it again or download it again.")
    proj.load_state_dict(state, strict=True, assign=True)
    return proj


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:4])
    return shown + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")


def _load_pt(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FuserFormatError(f"{path} is missing; download the pair again.")
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) file
    except pickle.UnpicklingError as exc:
        # torch names a refused global ("Unsupported global: GLOBAL x", "unsupported GLOBAL x"); other failures are damage
        if "GLOBAL" not in str(exc):
            raise FuserFormatError(f"{path} is corrupt, or holds pickle data a safe load refuses ({_reason(exc)}); "
                                   "download the pair again.") from exc
        raise UnsafeCheckpointError(
            f"{path} holds objects other than tensors, which could run code when unpickled; refusing to load it. "
            "Get the fuser from a trusted source, or convert a trusted copy to safetensors with `c2c fuser convert`."
        ) from exc
    except MemoryError:
        raise
    except Exception as exc:  # damaged bytes make torch.load raise nearly anything (IndexError, KeyError, struct.error)
        raise FuserFormatError(f"{path} is truncated or corrupt ({_first_line(exc)}); download the pair again.") from exc
    if not isinstance(state, dict):
        raise FuserFormatError(f"{path} holds a {type(state).__name__}, not a state dict.")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _reason(exc: BaseException) -> str:
    """The line of torch's long weights-only message that says what it refused."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower() or "unsupported" in line.lower()),
                _first_line(exc))[:200]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FuserFormatError(f"{path} is missing; the fuser folder is incomplete.")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FuserFormatError(f"{path} is not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise FuserFormatError(f"{path} should hold a JSON object.")
    return data


def _read_recipe(path: Path) -> dict[str, Any]:
    """The published ``config.json``; the reference reads it as YAML, so accept YAML too."""
    try:
        return _read_json(path)
    except FuserFormatError:
        if not path.is_file():
            raise
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise FuserFormatError(f"{path} is neither JSON nor YAML ({exc}).") from exc
        if not isinstance(data, dict):
            raise FuserFormatError(f"{path} should hold a mapping.") from None
        return data


def _decode_typed(value: Any) -> Any:
    """``{"__type__": "torch.dtype", "value": "bfloat16"}`` and friends, to plain values."""
    if isinstance(value, dict) and "__type__" in value:
        kind, raw = value["__type__"], value.get("value")
        if kind in ("torch.dtype", "torch.device", "str"):
            return str(raw)
        raise FuserFormatError(f"unsupported typed value {kind!r} in projector arguments")
    return value


def _encode_args(args: dict[str, Any]) -> dict[str, Any]:
    out = dict(args)
    out["dtype"] = {"__type__": "torch.dtype", "value": str(args["dtype"])}
    return out
