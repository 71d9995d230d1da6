"""Pulling timm's published weights for zoo entries from the Hugging Face hub, on a machine that
is online (``fopro admin weights pull``); jobs themselves never download anything.

One short HEAD to the hub comes first, without retries, so an offline machine fails in seconds
with the URL it tried instead of huggingface_hub's minute of back-off. The file is downloaded
into a temporary folder inside the weights dir (same disk as its final place), checked against
the hub's sha256 and strictly against the architecture, and installed by ``install_zoo_weights``;
the temporary folder goes in every case.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from app.core.errors import ServiceError, ServiceUnavailable
from app.teachers.service import (
    InstalledWeights,
    WeightsVerifierOfFile,
    install_zoo_weights,
    zoo_entry,
)

HUB_FILENAME = "model.safetensors"
# Long enough for a slow proxy's TCP handshake, short enough that offline fails at once.
CONNECT_TIMEOUT_S = 5.0
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class HubUnreachable(ServiceUnavailable):
    code = "hub_unreachable"


class HubDownloadFailed(ServiceError):
    status_code = 502
    code = "hub_download_failed"


def hub_endpoint() -> str:
    """The hub to pull from: ``HF_ENDPOINT`` (a mirror) read now, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_weights_url(name: str, endpoint: str | None = None) -> str:
    """The URL of zoo entry ``name``'s published ``model.safetensors``."""
    entry = zoo_entry(name)
    if entry.hf_hub_id is None:
        raise HubDownloadFailed(f"{name!r} has no published weights on the hub.")
    return f"{endpoint or hub_endpoint()}/{entry.hf_hub_id}/resolve/main/{HUB_FILENAME}"


def pull_zoo_weights(
    name: str,
    weights_dir: Path,
    *,
    verify: WeightsVerifierOfFile,
    endpoint: str | None = None,
    timeout_s: float = CONNECT_TIMEOUT_S,
) -> InstalledWeights:
    """Download zoo entry ``name``'s timm weights from the hub and install them.

    ``verify(arch, path)`` is the strict torch check ``weights add`` uses; a byte progress bar
    goes to stderr. Raises HubUnreachable (no connection within ``timeout_s``
    seconds), HubDownloadFailed (the hub answered an error, or the transfer broke),
    WeightsFileRejected (corrupted or not this architecture); nothing is installed then.
    """
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    from tqdm import tqdm

    endpoint = endpoint or hub_endpoint()
    entry = zoo_entry(name)
    url = hub_weights_url(name, endpoint)
    way_out = (
        "Offline? Download that file on a machine with internet and install it here with "
        f"`fopro admin weights add {name} FILE`."
    )
    try:
        metadata = get_hf_file_metadata(url, timeout=timeout_s, endpoint=endpoint)
    except (httpx2.RequestError, OfflineModeIsEnabled) as exc:
        raise HubUnreachable(
            f"Cannot reach {url} ({type(exc).__name__}: {exc or 'no answer'}). {way_out}",
            details={"url": url},
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "an error"
        raise HubDownloadFailed(
            f"{url} answered HTTP {status}. {way_out}", details={"url": url}
        ) from exc

    weights_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".pull-{name}-", dir=weights_dir) as temp:
        try:
            downloaded = hf_hub_download(
                entry.hf_hub_id or "",
                HUB_FILENAME,
                local_dir=temp,
                endpoint=endpoint,
                etag_timeout=timeout_s,
                # Plain tqdm shows in logs too (the hub's own bar only shows on a terminal).
                tqdm_class=tqdm,
            )
        except (httpx2.RequestError, HfHubHTTPError, OSError) as exc:
            raise HubDownloadFailed(
                f"Downloading {url} failed ({type(exc).__name__}: {exc}). {way_out}",
                details={"url": url},
            ) from exc
        # The hub's ETag of a large (LFS) file is its sha256: a transfer that garbled it fails.
        digest = metadata.etag if metadata.etag and _SHA256.match(metadata.etag) else None
        return install_zoo_weights(
            name, Path(downloaded), weights_dir, verify=verify, expected_sha256=digest
        )
