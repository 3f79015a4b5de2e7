"""Typed engine errors.

Every error the engine raises on bad input is a :class:`C2CError`. Its message
names the problem and, where there is one, the fix, so the CLI can print it on
one line and the app can show it in its banner without a traceback.
"""

from __future__ import annotations


class C2CError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelLoadError(C2CError):
    """A receiver or sharer could not be loaded (missing folder, bad id, no GPU...)."""


class ModelFileError(ModelLoadError):
    """A model file is not what its name says (a .gguf file that is no GGUF file) or cannot be read."""


class OfflineModelError(ModelLoadError):
    """A model named by a Hub id is nowhere on this machine, and the Hub cannot be reached (or is switched off)."""


class UnsupportedModelError(ModelLoadError):
    """A model this project cannot use: a GGUF architecture transformers cannot read, or layers without
    keys and values of their own, which cache fusion cannot fuse."""


class AdapterError(ModelLoadError):
    """A PEFT adapter folder is missing files, is malformed, or holds weights in a pickle (never loaded)."""


class AdapterMismatchError(AdapterError):
    """An adapter was made for another base model: its target modules or weight shapes do not fit (the message
    names both)."""


class FuserFormatError(C2CError):
    """A fuser checkpoint is missing files, is malformed, or has wrong keys or shapes."""


class TeamFormatError(FuserFormatError):
    """A team folder's ``team.json`` is missing, malformed, or names a fuser folder that does not exist."""


class UnsafeCheckpointError(FuserFormatError):
    """A checkpoint holds a pickle that would run code; it is never loaded."""


class PairMismatchError(C2CError):
    """The fuser was made for another receiver/sharer pair than the one loaded."""


class PromptError(C2CError):
    """The prompt or conversation cannot be answered (empty, too long, malformed)."""


class ContextLengthError(PromptError):
    """The prompt does not fit in a model's context (the message names the model, both lengths and the fix)."""


class SettingsError(C2CError, ValueError):
    """Generation or training settings out of range or of the wrong type (the message names the setting)."""


class ModeUnavailableError(C2CError):
    """An answer mode needs something that is not loaded (cache fusion without a fuser)."""


class ServeError(C2CError):
    """The API server cannot start or answer: its port is taken, another host without an API key, or it stopped."""


class Cancelled(C2CError):
    """Long work (loading, downloading, training) was cancelled by the user."""


class DataError(C2CError):
    """Training data is missing or malformed (the message names the file and line)."""


class TrainingError(C2CError):
    """Training cannot start or continue: bad settings, an incompatible checkpoint to resume, too little data."""


class DownloadError(C2CError):
    """A download from the Hub failed: unreachable, not found, or the server sent bytes that fail verification."""


class DiskSpaceError(DownloadError):
    """Not enough free disk space for a download (the message names the shortfall)."""


class AuthError(DownloadError):
    """A gated or private repo needs a login: a missing, expired or unapproved token."""


def describe(exc: BaseException) -> str:
    """One line for the user: a typed error's own message, or the type and first line of anything else."""
    if isinstance(exc, C2CError):
        return str(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's CUDA/MPS OOM, by name:
        where = "GPU" if type(exc).__name__ == "OutOfMemoryError" else "memory"  # no torch import here
        said = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        return (f"Out of {where}{f' ({said})' if said else ''}: the models did not fit. Free some memory (close other programs or panes), or load "
                "a smaller model, a lower dtype (bfloat16) or 8-/4-bit quantization, or ask for fewer new tokens.")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
