"""``c2c serve``: every answer mode of a loaded pair as a model of a local OpenAI-compatible server.

:mod:`fusers.serve.api` turns requests and answers into OpenAI's format (no HTTP, no torch);
:mod:`fusers.serve.server` serves them (Starlette on uvicorn, imported only there). See ``docs/serve.md``.
"""

DEFAULT_HOST = "127.0.0.1"  # this machine only: another host needs an API key
DEFAULT_PORT = 8000
