"""What went wrong with the Hub or the network, as a typed error that says what to do."""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from ..errors import AuthError, DiskSpaceError, DownloadError
from .environment import endpoint


def translate(exc: BaseException, what: str, repo_id: str | None = None) -> DownloadError:
    """A typed error with a fix for an exception from huggingface_hub or the network."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    login = "log in with `hf auth login` or set HF_TOKEN to a token that can read it"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError):
        page = f"{endpoint()}/{repo_id}" if repo_id else "its Hub page"
        return AuthError(f"{what} is gated: accept its licence on {page}, then {login}.")
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return AuthError(f"{what} needs a valid Hugging Face token (missing or expired): {login}.")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError(f"{what} was not found on {endpoint()}; check the name (or, if it is private, {login}).")
    if isinstance(exc, (RevisionNotFoundError, RemoteEntryNotFoundError)):
        return DownloadError(f"{what} was not found on {endpoint()} ({first}).")
    if isinstance(exc, HfHubHTTPError) and status == 403:
        return AuthError(f"{what}: access refused (403); your token lacks read access: {login}.")
    if isinstance(exc, (OfflineModeIsEnabled, LocalEntryNotFoundError)):
        return DownloadError(f"{what} is not in the cache and downloads are off (HF_HUB_OFFLINE) or the Hub "
                             f"({endpoint()}) cannot be reached. Go online and download it again.")
    if isinstance(exc, unreachable_errors()):
        return DownloadError(unreachable_message(what, first))
    if isinstance(exc, transport_errors()):
        return DownloadError(f"Lost the connection to {endpoint()} while fetching {what} ({first}). Run the download "
                             "again: finished files are kept.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return DiskSpaceError(f"The disk filled up (or a quota or file-size limit was reached) while fetching {what}. "
                              "Free some space and download again: finished files are kept.")
    return DownloadError(f"Could not fetch {what} from {endpoint()}: {first}")


def unreachable_message(what: str, cause: str) -> str:
    """The Hub was never reached (no connection was made): say the likely causes and the ways on."""
    where = endpoint()
    set_by = "HF_ENDPOINT" if os.environ.get("HF_ENDPOINT") else "the default; HF_ENDPOINT changes it"
    return (f"Cannot reach the Hub at {where} ({set_by}) to fetch {what}: {cause}. This machine is offline, its DNS "
            "cannot resolve the host, or a proxy or firewall is in the way. Connect to the network and try again; "
            "behind a proxy set HTTPS_PROXY, or set HF_ENDPOINT to a mirror you can reach. Without the Hub, give a "
            "local fuser folder instead (--fuser FOLDER, or the app's Fuser box).")


def _http_module() -> Any:
    """The HTTP library behind huggingface_hub's own session. huggingface_hub 1.x talks through httpx, 2.x through
    its fork httpx2: neither is imported (nor declared) by name."""
    import importlib

    from huggingface_hub.utils import get_session

    return importlib.import_module(type(get_session()).__module__.split(".")[0])


def transport_errors() -> tuple[type[BaseException], ...]:
    """What a failed connection raises, before or during a transfer."""
    return (_http_module().TransportError, ConnectionError, TimeoutError)


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """What a connection that was never made raises: a name that does not resolve, a refused or timed-out connect,
    a proxy that fails (not a transfer cut short)."""
    http = _http_module()
    return (http.ConnectError, http.ConnectTimeout, http.ProxyError, ConnectionRefusedError, socket.gaierror)


def is_connection_error(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(exc, HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return status is not None and status >= 500
    return isinstance(exc, (OfflineModeIsEnabled, *transport_errors()))
