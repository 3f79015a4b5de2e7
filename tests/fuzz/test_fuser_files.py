"""Fuzzing the fuser readers: our manifest, the published config.json / projector_config.json /
projector_{i}.json, and the .pt loader. Every input loads, or raises a FuserFormatError with a readable
message naming the file; nothing else escapes, and nothing is written outside the output folder."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings, strategies as st

from fusers import tiny
from fusers.checkpoint import MANIFEST_NAME, PUBLISHED_CONFIG, PUBLISHED_DIR, PUBLISHED_MAP, _load_pt, convert, \
    load_fuser, save_fuser, save_published
from fusers.errors import FuserFormatError, UnsafeCheckpointError
from fusers.fuser import Fuser

# JSON values of every kind, nested a little: what a damaged or hand-edited file may hold
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def small_fuser() -> Fuser:
    receiver = tiny.tiny_config("qwen3", 64, hidden_size=32, layers=2, heads=2, kv_heads=1)
    sharer = tiny.tiny_config("qwen2", 64, hidden_size=32, layers=1, heads=2, kv_heads=1)
    return tiny.random_fuser(receiver, sharer, hidden_dim=8, intermediate_dim=8)


@pytest.fixture(scope="module")
def folders(small_fuser: Fuser, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz-fusers")
    return {"ours": save_fuser(small_fuser, root / "ours"), "published": save_published(small_fuser, root / "pub")}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def _mutate(data: Any, draw: Any, depth: int = 0) -> Any:
    """Replace, delete or add one entry somewhere in ``data`` (or replace it whole)."""
    if isinstance(data, dict) and data and depth < 4 and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(data)))
        action = draw(st.sampled_from(["replace", "delete", "add", "descend"]))
        out = dict(data)
        if action == "replace":
            out[key] = draw(json_values)
        elif action == "delete":
            del out[key]
        elif action == "add":
            out[draw(st.text(max_size=8))] = draw(json_values)
        else:
            out[key] = _mutate(out[key], draw, depth + 1)
        return out
    if isinstance(data, list) and data and depth < 4 and draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 1))
        out = list(data)
        out[i] = _mutate(out[i], draw, depth + 1) if draw(st.booleans()) else draw(json_values)
        return out
    return draw(json_values)


def _check_load(folder: Path) -> None:
    """Load and convert: a Fuser, or a FuserFormatError; the source is never written to, the copy only into dst."""
    before = _tree(folder)
    try:
        fuser = load_fuser(folder)
    except FuserFormatError as exc:
        assert str(exc).strip() and "\n" not in str(exc).strip()[:1], exc
    else:
        assert isinstance(fuser, Fuser)
        for p in fuser.projectors:
            for name, t in p.state_dict().items():
                assert t.is_floating_point() and bool(torch.isfinite(t).all()), name
        with tempfile.TemporaryDirectory() as out:
            dst = Path(out) / "converted"
            convert(folder, dst)
            assert load_fuser(dst).info.receiver == fuser.info.receiver
    assert _tree(folder) == before, "reading a fuser wrote into its folder"


def _copy(src: Path) -> Path:
    dst = Path(tempfile.mkdtemp(prefix="fuzz-fuser-")) / src.name
    shutil.copytree(src, dst)
    return dst


@settings(max_examples=40)
@given(st.data())
def test_our_manifest_loads_or_says_what_is_wrong(folders, data) -> None:
    folder = _copy(folders["ours"])
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        (folder / MANIFEST_NAME).write_text(json.dumps(_mutate(manifest, data.draw)))
        _check_load(folder)
    finally:
        shutil.rmtree(folder.parent)


@settings(max_examples=40)
@given(st.data(), st.sampled_from([PUBLISHED_CONFIG, f"{PUBLISHED_DIR}/{PUBLISHED_MAP}",
                                   f"{PUBLISHED_DIR}/projector_0.json", f"{PUBLISHED_DIR}/projector_1.json"]))
def test_published_json_files_load_or_say_what_is_wrong(folders, data, name: str) -> None:
    folder = _copy(folders["published"])
    try:
        original = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps(_mutate(original, data.draw)))
        _check_load(folder)
    finally:
        shutil.rmtree(folder.parent)


@settings(max_examples=15)
@given(st.binary(max_size=300) | st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_random_bytes_in_any_fuser_file_are_a_format_error(folders, raw: bytes) -> None:
    for kind, name in (("ours", MANIFEST_NAME), ("ours", "fuser.safetensors"), ("published", PUBLISHED_CONFIG),
                       ("published", f"{PUBLISHED_DIR}/projector_0.pt")):
        folder = _copy(folders[kind])
        try:
            (folder / name).write_bytes(raw)
            _check_load(folder)
        finally:
            shutil.rmtree(folder.parent)


# -- the .pt loader ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def valid_pt(folders) -> bytes:
    return (folders["published"] / PUBLISHED_DIR / "projector_0.pt").read_bytes()


def _pt_file(raw: bytes) -> Path:
    fd, name = tempfile.mkstemp(suffix=".pt")
    with os.fdopen(fd, "wb") as fh:
        fh.write(raw)
    return Path(name)


@given(st.data())
def test_a_truncated_pt_file_is_a_format_error(valid_pt, data) -> None:
    cut = data.draw(st.integers(0, len(valid_pt) - 1))
    path = _pt_file(valid_pt[:cut])
    try:
        with pytest.raises(FuserFormatError, match="truncated or corrupt|holds"):
            _load_pt(path)
    finally:
        path.unlink()


@given(st.binary(min_size=1, max_size=2000))
def test_random_bytes_as_a_pt_file_are_a_format_error(raw: bytes) -> None:
    path = _pt_file(raw)
    try:
        with pytest.raises(FuserFormatError):
            _load_pt(path)
    finally:
        path.unlink()


class _RunsCode:
    """A pickle that would call os.getcwd when unpickled (harmless, but code all the same)."""

    def __reduce__(self):
        return (os.getcwd, ())


forbidden = st.sampled_from([_RunsCode(), {"w": _RunsCode()}, Path("/"), {"w": torch.zeros(2), "x": io.BytesIO()},
                             {"cls": Fuser}, {"f": print}])


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch's note on protocol 5, expected
@given(forbidden, st.sampled_from([True, False]), st.sampled_from([2, pickle.HIGHEST_PROTOCOL]))
def test_pickles_of_forbidden_objects_are_refused(obj: Any, zipped: bool, protocol: int) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=zipped, pickle_protocol=protocol)
    path = _pt_file(buf.getvalue())
    try:
        # protocol 2 (torch's own) reaches the forbidden global; protocol 5's framing is refused before it
        refused = UnsafeCheckpointError if protocol == 2 else FuserFormatError
        with pytest.raises(refused, match="could run code" if protocol == 2 else "safe load refuses"):
            _load_pt(path)
    finally:
        path.unlink()


@settings(max_examples=20)
@given(st.data(), st.sampled_from(["int", "nan", "inf", "-inf", "bool"]))
def test_integer_and_non_finite_weights_are_refused_at_load(folders, data, kind: str) -> None:
    folder = _copy(folders["published"])
    try:
        pt = folder / PUBLISHED_DIR / "projector_0.pt"
        state = torch.load(pt, weights_only=True)
        name = data.draw(st.sampled_from(sorted(state)))
        t = state[name]
        if kind == "int":
            t = t.to(data.draw(st.sampled_from([torch.int64, torch.int32, torch.int8, torch.uint8])))
        elif kind == "bool":
            t = t.to(torch.bool)
        else:
            t = t.clone()
            t.view(-1)[data.draw(st.integers(0, t.numel() - 1))] = float(kind)
        state[name] = t
        torch.save(state, pt)
        with pytest.raises(FuserFormatError, match=name):
            load_fuser(folder)
        ours = save_fuser_unchecked(folder, state)
        with pytest.raises(FuserFormatError, match=name):
            load_fuser(ours)
    finally:
        shutil.rmtree(folder.parent)


def save_fuser_unchecked(published: Path, state: dict[str, torch.Tensor]) -> Path:
    """Our format holding the same bad tensor: a safetensors file written directly, beside a valid manifest."""
    from safetensors.torch import load_file, save_file

    ours = published.parent / "ours"
    tensors = {}
    for i in range(2):
        sd = state if i == 0 else torch.load(published / PUBLISHED_DIR / f"projector_{i}.pt", weights_only=True)
        tensors.update({f"projectors.{i}.{k}": v.contiguous() for k, v in sd.items()})
    good = _good_ours(published)
    shutil.copytree(good, ours)
    assert set(load_file(str(ours / "fuser.safetensors"))) == set(tensors)
    save_file(tensors, str(ours / "fuser.safetensors"))
    return ours


def _good_ours(published: Path) -> Path:
    out = published.parent / "good-ours"
    if not out.exists():
        # a copy of the unmodified pair, converted: the manifest matches the tensors' names
        clean = published.parent / "clean"
        shutil.copytree(published, clean)
        for i in range(2):
            pt = clean / PUBLISHED_DIR / f"projector_{i}.pt"
            sd = torch.load(pt, weights_only=True)
            torch.save({k: torch.zeros_like(v, dtype=torch.float32) for k, v in sd.items()}, pt)
        convert(clean, out)
    return out
