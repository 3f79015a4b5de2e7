"""Subcommands of ``c2c``; each module has ``register(subparsers)``."""
