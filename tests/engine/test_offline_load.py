"""Loading makes no Hub request, online or not, with `kernels` installed or not (transformers >= 5.25 requires
it and would kernelize every load: fusers.libraries.LOAD_OPTIONS switches that off)."""

from __future__ import annotations

LOAD = r"""
from fusers.pair import ModelSpec, load_pair
from fusers.sources import default_pair
receiver, sharer, fuser = default_pair()
for quantize in ("none", "8bit"):  # quantizing imports bitsandbytes, which asked the Hub on some CPUs
    pair = load_pair(ModelSpec(receiver, "cpu", "float32", quantize), ModelSpec(sharer, "cpu", "float32", quantize),
                     fuser)
    print("loaded", pair.receiver.quantize, pair.fuser is not None)
"""


def test_loading_the_demo_pair_plain_and_quantized_asks_the_hub_nothing(counting_hub):
    out = counting_hub.run_child(LOAD)
    assert "loaded none True" in out and "loaded 8bit True" in out
    assert counting_hub.requests == []


def test_the_counting_hub_sees_a_request_that_reaches_it(counting_hub):
    """The check above can fail: a Hub id the engine must look up is a request this hub records."""
    out = counting_hub.run_child(r"""
from fusers.errors import ModelLoadError
from fusers.pair import ModelSpec, load_model
try:
    load_model(ModelSpec("someone/no-such-model", "cpu"), "receiver")
except ModelLoadError as exc:
    print("refused")
""")
    assert "refused" in out
    assert any("someone/no-such-model" in r for r in counting_hub.requests)
