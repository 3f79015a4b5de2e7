"""Property tests: a hypothesis profile bounded so that the whole folder stays well under two minutes.

Examples are derandomized (the same inputs on every run, so CI never flakes on a new draw) and carry no
deadline (2 shared cores: a slow example is not a failure). ``HYPOTHESIS_PROFILE=deep`` draws many more.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "c2c", max_examples=60, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
settings.register_profile("deep", parent=settings.get_profile("c2c"), max_examples=2000, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "c2c"))
