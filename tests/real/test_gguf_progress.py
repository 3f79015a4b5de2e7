"""Converting a GGUF file is a load step that reports its own progress (tensors converted of the file's) and stops
between tensors when the load is cancelled, leaving nothing in the cache. On SmolLM2-135M, in a cache of the
test's own, so that the conversion really runs."""

from __future__ import annotations

import threading

import pytest


def _tensor_count(path) -> int:
    import gguf

    return len(gguf.GGUFReader(str(path)).tensors)


def test_the_conversion_reports_each_tensor_within_its_load_step(real_paths, tmp_path, monkeypatch):
    from fusers import gguf
    from fusers.pair import Placement, load_pair

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    smollm2 = real_paths[0]
    steps = []
    pair = load_pair(str(smollm2), str(smollm2), progress=steps.append, defaults=Placement("cpu", "float32"))
    n = _tensor_count(smollm2)
    counted = [(p.step, p.done, p.of) for p in steps if p.of]
    assert counted, "no progress inside the conversion step"
    assert {step for step, _, _ in counted} == {1}  # the receiver's step; the sharer reads the converted folder
    assert {of for _, _, of in counted} == {n}
    done = [d for _, d, _ in counted]
    assert done == sorted(done) and done[0] == 0 and done[-1] == n
    assert all(f"{d} of {n} tensors" in p.message and "converting it once" in p.message
               for p, d in zip([p for p in steps if p.of], done))
    assert gguf.is_converted(smollm2, "float32") and pair.receiver.model is not None


def test_a_cancel_stops_the_conversion_between_tensors_and_leaves_nothing(real_paths, tmp_path, monkeypatch):
    from fusers import gguf
    from fusers.errors import Cancelled
    from fusers.pair import Placement, load_pair

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    smollm2 = real_paths[0]
    cancel = threading.Event()
    seen = []

    def progress(p) -> None:
        if p.of:
            seen.append(p.done)
            if p.done >= 3:
                cancel.set()  # as the app's Cancel button does, from another thread

    with pytest.raises(Cancelled, match="cancelled"):
        load_pair(str(smollm2), str(smollm2), progress=progress, cancel=cancel, defaults=Placement("cpu"))
    assert 3 <= max(seen) < _tensor_count(smollm2)  # stopped part-way
    assert not gguf.is_converted(smollm2, "float32")
    assert list(gguf.cache_root().iterdir()) == []  # no half-written folder left
