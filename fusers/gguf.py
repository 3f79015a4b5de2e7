"""GGUF files as models: converted once into a plain model folder, then loaded like any other folder.

transformers dequantizes a GGUF file on every load (SmolLM2-135M 13 s, Gemma-3-270M 37 s on 2 cores) and
refuses bitsandbytes on top of one. So the first load converts the file, in a child process, into a plain
model folder (config, safetensors weights in the load's dtype, tokenizer and chat template) under
``$XDG_CACHE_HOME/c2c-playground/gguf``; every later load, in any quantization, reads that folder. The
child process holds the dequantized copies, so none of that memory stays with the app. The weights are
exactly those of a direct GGUF load in the same dtype (``tests/real`` compares them).

Where the cache cannot be written (read-only, or too small), the folder is a temporary one, removed after
the load.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from . import errors
from .errors import Cancelled, ModelFileError, ModelLoadError, UnsupportedModelError

# told (tensors converted, tensors in the file) as the child converts: 0 of N once the file is opened, N of N at the end
TensorProgress = Callable[[int, int], None]

MAGIC = b"GGUF"  # the first four bytes of every GGUF file
FORMAT_VERSION = 1  # bump when the folder's layout changes: older folders are then converted again
DONE_NAME = "c2c-gguf.json"  # written last: a folder without it is unfinished and never used
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def is_gguf(source: str | Path) -> bool:
    return str(source).lower().endswith(".gguf")


def check_file(path: Path, role: str) -> None:
    """Raise :class:`ModelFileError`, naming the file, the role and the fix, unless ``path`` begins as a GGUF file
    does: a text file or an error page saved as ``model.gguf`` fails here, before any conversion is announced."""
    fix = (f"Point the {role} to a real .gguf file (download it again if it was cut short), a model folder, or a "
           "Hub id.")
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(MAGIC))
    except OSError as exc:
        raise ModelFileError(f"The {role} file {path} cannot be read ({exc.strerror or exc}). {fix}") from None
    if head == MAGIC:
        return
    what = ("is empty (an unfinished download?)" if not head else
            f"begins with {head!r}, not GGUF's {MAGIC!r} (a text file, or a download that saved an error page?)")
    raise ModelFileError(f"The {role} file {path} is not a GGUF file: it {what}. {fix}")


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "c2c-playground" / "gguf"


def _key(path: Path, dtype: str) -> dict[str, Any]:
    import transformers

    stat = path.stat()
    return {"source": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "dtype": dtype,
            "transformers": transformers.__version__, "format_version": FORMAT_VERSION}


def cached_folder(path: Path, dtype: str) -> Path:
    """Where the converted copy of ``path`` in ``dtype`` lives (it may not be there yet)."""
    key = _key(path, dtype)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / f"{path.stem}-{dtype}-{digest}"


def is_converted(path: Path, dtype: str) -> bool:
    return (cached_folder(path, dtype) / DONE_NAME).is_file()


def converted_size(path: Path, dtype: str) -> int:
    """Bytes the converted weights take: every tensor's elements at ``dtype``'s width."""
    import gguf  # reads the header and tensor table only (memory-mapped)

    reader = gguf.GGUFReader(str(path))
    elements = 0
    for tensor in reader.tensors:
        n = 1
        for d in tensor.shape:
            n *= int(d)
        elements += n
    return elements * _BYTES.get(dtype, 4)


def convert(path: Path, dtype: str, role: str, progress: TensorProgress | None = None,
            cancel: threading.Event | None = None) -> tuple[Path, bool]:
    """The plain model folder for ``path`` in ``dtype``, converting it first when needed.

    Returns ``(folder, temporary)``: a temporary folder is the caller's to remove after loading. ``progress`` is
    told the tensors converted so far; ``cancel`` stops the conversion (the child is stopped at once, between
    tensors or while it writes) and raises :class:`~fusers.errors.Cancelled`, leaving nothing behind.
    """
    folder = cached_folder(path, dtype)
    if (folder / DONE_NAME).is_file():
        return folder, False
    check_file(path, role)
    try:
        need = converted_size(path, dtype) + (64 << 20)  # tokenizer files and headroom
    except Exception as exc:  # noqa: BLE001 - a GGUF header the gguf package cannot read: one typed error
        raise explain_failure(role, str(path), exc) from exc
    root = cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        room = shutil.disk_usage(root).free
    except OSError:
        room = -1
    temporary = room < need
    if temporary:
        scratch = Path(tempfile.gettempdir())
        if shutil.disk_usage(scratch).free < need:
            raise ModelLoadError(
                f"The {role} {path.name} needs {need / 2**30:.1f} GiB of disk for its converted weights, and neither "
                f"{root} ({max(room, 0) / 2**30:.1f} GiB free) nor {scratch} has it. Free some space, or set "
                "XDG_CACHE_HOME to a larger disk.")
        work = Path(tempfile.mkdtemp(prefix="c2c-gguf-"))
    else:
        work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        _run_converter(path, work, dtype, role, progress, cancel)
        if temporary:
            return work, True
        (work / DONE_NAME).write_text(json.dumps(_key(path, dtype), indent=2, sort_keys=True) + "\n")
        try:
            os.replace(work, folder)  # atomic: another process never sees half a folder
        except OSError:  # another process finished the same conversion first: use its folder
            shutil.rmtree(work, ignore_errors=True)
        _forget_older_copies(path, dtype, folder)
        return folder, False
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _forget_older_copies(path: Path, dtype: str, keep: Path) -> None:
    """Remove copies of the same file converted before it changed (or by an older transformers)."""
    source = str(path.resolve())
    for other in cache_root().glob(f"{path.stem}-*"):
        if other == keep or not (other / DONE_NAME).is_file():
            continue
        try:
            record = json.loads((other / DONE_NAME).read_text())
        except (OSError, ValueError):
            continue
        if record.get("source") == source and record.get("dtype") == dtype:
            shutil.rmtree(other, ignore_errors=True)


def _run_converter(path: Path, out: Path, dtype: str, role: str, progress: TensorProgress | None = None,
                   cancel: threading.Event | None = None) -> None:
    env = dict(os.environ)
    # The child imports this same engine: the folder holding the `fusers` package (a checkout or site-packages).
    root = str(Path(str(importlib.resources.files("fusers"))).parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cancel = cancel or threading.Event()
    lines: list[str] = []
    with tempfile.TemporaryFile("w+") as stderr:  # a file, not a pipe: a chatty child never blocks on it
        child = subprocess.Popen([sys.executable, "-m", "fusers.gguf", str(path), str(out), dtype, role],
                                 stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        done = threading.Event()

        def stop_on_cancel() -> None:  # the child may be silent for a while (writing the folder): watch from here
            while not done.is_set():
                if cancel.wait(0.1):
                    child.kill()
                    return

        watcher = threading.Thread(target=stop_on_cancel, name="c2c-gguf-cancel", daemon=True)
        watcher.start()
        try:
            assert child.stdout is not None
            for line in child.stdout:  # one line per tensor, then a failure's record, if any
                record = _record(line)
                if record is not None and "tensors" in record:
                    if progress is not None and not cancel.is_set():
                        progress(*record["tensors"])
                else:
                    lines.append(line)
            child.wait()
        finally:
            done.set()
            watcher.join()
            if child.poll() is None:  # the progress callback raised: the child goes with it
                child.kill()
                child.wait()
        if cancel.is_set():
            raise Cancelled("Loading was cancelled.")
        if child.returncode == 0:
            return
        stderr.seek(0)
        error_text = stderr.read()
    failures = [r for r in map(_record, lines) if r is not None and "message" in r]
    if not failures:
        tail = (error_text.strip().splitlines() or ["(no output)"])[-1][:300]
        raise ModelLoadError(f"Converting the {role} GGUF file {path} failed (exit {child.returncode}): {tail}") \
            from None
    failure = failures[-1]
    kind = getattr(errors, failure.get("type", ""), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.C2CError)):
        kind = ModelLoadError
    raise kind(failure["message"])


def _record(line: str) -> dict[str, Any] | None:
    """A JSON line of the child's, or None for anything else it printed."""
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def explain_failure(role: str, source: str, exc: Exception) -> errors.C2CError:
    """The typed error for a GGUF file transformers could not read."""
    text = str(exc)
    found = re.search(r"architecture (\S+) is not supported", text)
    if found:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        readable = sorted(set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"})  # those two are sections
        return UnsupportedModelError(
            f"The {role} {source} is a GGUF file of architecture {found.group(1)}, which transformers cannot read "
            f"(it reads {', '.join(readable)}). Use a model of one of those architectures, or its Hub folder.")
    if isinstance(exc, ImportError) and "gguf" in text.lower():
        return ModelLoadError(f"Reading the GGUF file {source} needs the gguf package: pip install gguf.")
    first_line = (f"{type(exc).__name__}: {exc}".strip().splitlines() or [""])[0][:300]
    return ModelFileError(f"Could not read the {role} GGUF file {source}: {first_line}. The file may be damaged or "
                          "cut short: download it again, or give the model's folder or Hub id.")


def _convert_here(path: Path, out: Path, dtype_text: str) -> None:
    """The child's work: dequantize, then write a plain folder. A model loaded from GGUF refuses
    ``save_pretrained``; one built from its config and given its state dict does not."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .libraries import LOAD_OPTIONS, quiet_libraries

    quiet_libraries()
    _count_tensors()
    dtype = getattr(torch, dtype_text)
    folder, name = str(path.resolve().parent), path.name  # absolute: a relative folder is taken for a Hub id
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    dequantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, **LOAD_OPTIONS)
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF record: the folder is plain weights
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict(dequantized.state_dict())  # strict: every weight, no key missing
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _count_tensors() -> None:
    """Tell the parent each tensor dequantized, a line on stdout each. transformers dequantizes a GGUF file's
    tensors in one loop, drawn with tqdm (``modeling_gguf_pytorch_utils.tqdm``); in this child the bar, which
    nobody sees, becomes a count. A transformers that draws no such bar converts as before, without the count."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    if not hasattr(gguf_utils, "tqdm"):
        return

    def counted(iterable: Any, *args: Any, **kwargs: Any) -> Any:
        items = list(iterable)
        for i, item in enumerate(items):
            print(json.dumps({"tensors": [i, len(items)]}), flush=True)
            yield item
        print(json.dumps({"tensors": [len(items), len(items)]}), flush=True)

    gguf_utils.tqdm = counted


def main(argv: list[str] | None = None) -> int:
    path, out, dtype, role = argv if argv is not None else sys.argv[1:]
    try:
        _convert_here(Path(path), Path(out), dtype)
    except Exception as exc:  # noqa: BLE001  (reported to the parent as one typed error)
        error = exc if isinstance(exc, errors.C2CError) else explain_failure(role, path, exc)
        print(json.dumps({"type": type(error).__name__, "message": str(error)}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
