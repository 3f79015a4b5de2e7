"""Fixtures of the hub tests: the fake hub server lives in fake_hub.py, shared with the app's dialog tests."""

from .fake_hub import fake_hub, hf_home  # noqa: F401 - fixtures
