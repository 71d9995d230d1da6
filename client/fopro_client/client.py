"""``FoproClient``: the FoPro-KD Service's HTTP API as Python calls.

Every call returns typed models (``fopro_client.models``) or raises a typed error
(``fopro_client.errors``) that carries the API's code, message and details. Requests are retried
with backoff on 429/503 and dropped connections only where repeating them cannot do anything
twice: reads and deletes, predictions, job submissions (each carries an ``Idempotency-Key``, so the
server answers a repeat with the first job), and any request whose connection never opened.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter

from fopro_client.config import Connection, resolve_connection
from fopro_client.errors import (
    Conflict,
    ConnectionFailed,
    DatasetInvalid,
    DownloadMismatch,
    FoproError,
    error_from_response,
)
from fopro_client.models import (
    Artifact,
    Dataset,
    DatasetStatus,
    Event,
    Job,
    JobMetrics,
    JobProgress,
    JobUpdate,
    Me,
    Page,
    Predictions,
    StreamEnd,
    TeacherCatalog,
    TeamTeacher,
)
from fopro_client.retry import RETRY_STATUSES, RetryPolicy, retry_after_seconds
from fopro_client.sse import ServerSentEvent, SSEDecoder, iter_sse
from fopro_client.transfer import ReportingReader, TransferProgress, progress_callback

__all__ = ["FoproClient"]

M = TypeVar("M", bound=BaseModel)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# Raised before a single byte of the request left: repeating such a request is always safe.
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
DOWNLOAD_CHUNK_BYTES = 256 * 1024
# The stream sends a keep-alive comment every 15 s; a read that waits much longer is a dead link.
STREAM_READ_TIMEOUT_S = 60.0


def _archive_stem(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return path.stem or name


class FoproClient:
    """A connection to one FoPro-KD Service as one team (its API key).

    ``base_url``: e.g. ``http://127.0.0.1:8000`` (a path prefix behind a proxy is kept);
    ``timeout_s``: per read/write on ordinary requests (uploads stream, so it bounds a stall, not
    the whole upload); ``retry``: the backoff policy; ``transport``: an httpx transport (tests).
    Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": "fopro-client/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            transport=transport,
        )

    @classmethod
    def from_environment(cls, **kwargs: Any) -> FoproClient:
        """A client for ``FOPRO_URL``/``FOPRO_API_KEY``, else the ``fopro login`` config file."""
        connection: Connection = resolve_connection()
        return cls(connection.url, connection.api_key, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FoproClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one place requests are sent, retried and mapped to errors --------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request, retrying what is safe to repeat; a 2xx/3xx response (open, if
        ``stream``: close it) or the typed error. File bodies are re-read from offset 0 on every
        attempt (httpx seeks them)."""
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        retry = 0
        while True:
            last_try = retry + 1 >= self.retry.attempts
            try:
                request = self._http.build_request(method, path, **kwargs)
                response = self._http.send(request, stream=True)
            except httpx.TransportError as exc:
                if (safe or isinstance(exc, NEVER_SENT)) and not last_try:
                    self.retry.wait(retry)
                    retry += 1
                    continue
                raise ConnectionFailed(
                    f"{method} {self.base_url}{path} failed: {type(exc).__name__}: {exc}. "
                    "Check the server address (FOPRO_URL) and that the service is running."
                ) from exc
            if response.status_code < 400:
                if not stream:
                    try:
                        response.read()
                    finally:
                        response.close()
                return response
            try:
                response.read()
            finally:
                response.close()
            hint = retry_after_seconds(response)
            # A 429 is a refusal before any work, so even a non-idempotent request may repeat it.
            repeatable = safe or response.status_code == 429
            if (
                response.status_code in RETRY_STATUSES
                and repeatable
                and not last_try
                and (hint is None or hint <= self.retry.max_retry_after_s)
            ):
                self.retry.wait(retry, hint)
                retry += 1
                continue
            raise error_from_response(response, hint)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self._json(method, path, **kwargs))

    @staticmethod
    def _params(**values: Any) -> dict[str, Any]:
        return {k: v for k, v in values.items() if v is not None}

    # -- who am I --------------------------------------------------------------------------------

    def me(self) -> Me:
        """The team and role of this client's API key (raises ``AuthError`` for a bad key)."""
        return self._model(Me, "GET", "/v1/me")

    # -- datasets --------------------------------------------------------------------------------

    def upload_dataset(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        layout: str | None = None,
        manifest: str | None = None,
        split_seed: int | None = None,
        val_fraction: float | None = None,
        test_fraction: float | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        split_column: str | None = None,
        group_by: str | None = None,
        group_column: str | None = None,
        on_group_leak: str | None = None,
        dicom_frames: str | None = None,
        progress: TransferProgress | bool = False,
    ) -> Dataset:
        """Stream the archive at ``path`` (.zip, .tar, .tar.gz) from disk as a multipart upload;
        returns the dataset, ``validating`` (then call ``wait_ready``).

        ``name`` defaults to the file name without its archive suffix; the other options are the
        API's ingest options (``layout`` auto|folders|csv, split seed and fractions, CSV column
        names, ``group_by`` auto|none|column|dicom|folder:N for patient-level splits and
        ``on_group_leak`` refuse|warn, ``dicom_frames`` refuse|split). ``progress``:
        ``progress(filename, bytes_sent, total)``, or True for a bar on stderr.
        """
        archive = Path(path)
        if not archive.is_file():
            raise FileNotFoundError(f"No archive at {archive}: give the path of a .zip or .tar.gz")
        fields = self._params(
            name=name or _archive_stem(archive),
            layout=layout,
            manifest=manifest,
            split_seed=split_seed,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            image_column=image_column,
            label_column=label_column,
            split_column=split_column,
            group_by=group_by,
            group_column=group_column,
            on_group_leak=on_group_leak,
            dicom_frames=dicom_frames,
        )
        with archive.open("rb") as handle:
            body = self._reporting(handle, archive, progress)
            return self._model(
                Dataset,
                "POST",
                "/v1/datasets",
                data={k: str(v) for k, v in fields.items()},
                files={"file": (archive.name, body, "application/octet-stream")},
            )

    def wait_ready(
        self, dataset_id: str, *, timeout_s: float | None = None, poll_s: float = 1.0
    ) -> Dataset:
        """Poll until validation ends: the dataset when ``ready``; ``DatasetInvalid`` (with its
        ``problems``) when ``invalid``; ``Conflict`` when it is being deleted; ``TimeoutError``
        after ``timeout_s`` seconds (None: wait as long as it takes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            dataset = self.get_dataset(dataset_id)
            if dataset.status == DatasetStatus.ready:
                return dataset
            if dataset.status == DatasetStatus.invalid:
                raise DatasetInvalid(dataset)
            if dataset.settled:
                raise Conflict(
                    f"Dataset {dataset_id} is {dataset.status.value}; it will never be ready.",
                    code="dataset_not_ready",
                    details={"dataset_id": dataset_id, "status": dataset.status.value},
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Dataset {dataset_id} is still {dataset.status.value} after {timeout_s} s."
                )
            time.sleep(poll_s)

    def list_datasets(
        self, *, status: DatasetStatus | str | None = None, limit: int = 50, offset: int = 0
    ) -> Page[Dataset]:
        """Your team's datasets, newest first (``deleted`` ones only when asked by status)."""
        params = self._params(status=status, limit=limit, offset=offset)
        return self._model(Page[Dataset], "GET", "/v1/datasets", params=params)

    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._model(Dataset, "GET", f"/v1/datasets/{dataset_id}")

    def dataset_events(
        self, dataset_id: str, *, after_id: int | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Event]:
        """The dataset's creation and status changes, oldest first."""
        params = self._params(after_id=after_id, limit=limit, offset=offset)
        return self._model(Page[Event], "GET", f"/v1/datasets/{dataset_id}/events", params=params)

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete the dataset and its files (``Conflict`` while a queued or running job uses it)."""
        self._send("DELETE", f"/v1/datasets/{dataset_id}")

    # -- jobs ------------------------------------------------------------------------------------

    def submit_job(
        self,
        dataset_id: str,
        teacher: str,
        student: str,
        *,
        method: str | None = None,
        priority: str | None = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a distillation job on a ready dataset; the API's defaults (the paper's method
        and hyper-parameters) fill what is not given.

        ``idempotency_key``: the same key always names the same job, so a retried or repeated
        submission never queues a second one (a fresh key is made per call when omitted).
        """
        body: dict[str, Any] = {"dataset_id": dataset_id, "teacher": teacher, "student": student}
        body |= self._params(method=method, priority=priority)
        if params is not None:
            body["params"] = dict(params)
        key = idempotency_key or f"fopro-client-{uuid.uuid4().hex}"
        return self._model(
            Job, "POST", "/v1/jobs", json=body, headers={"Idempotency-Key": key}, idempotent=True
        )

    def list_jobs(
        self,
        *,
        status: str | None = None,
        dataset_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[Job]:
        """Your team's jobs, newest first, optionally by status and dataset."""
        params = self._params(status=status, dataset_id=dataset_id, limit=limit, offset=offset)
        return self._model(Page[Job], "GET", "/v1/jobs", params=params)

    def get_job(self, job_id: str) -> Job:
        return self._model(Job, "GET", f"/v1/jobs/{job_id}")

    def job_events(
        self, job_id: str, *, after_id: int | None = None, limit: int = 100, offset: int = 0
    ) -> Page[Event]:
        params = self._params(after_id=after_id, limit=limit, offset=offset)
        return self._model(Page[Event], "GET", f"/v1/jobs/{job_id}/events", params=params)

    def job_metrics(self, job_id: str) -> JobMetrics:
        """Per-epoch curves, the best epoch and, once succeeded, the classification report."""
        return self._model(JobMetrics, "GET", f"/v1/jobs/{job_id}/metrics")

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a queued job now, or ask a running one to stop at its next step."""
        return self._model(Job, "POST", f"/v1/jobs/{job_id}/cancel")

    def retry_job(self, job_id: str) -> Job:
        """A new job repeating a failed or cancelled one (it resumes from its checkpoint)."""
        return self._model(Job, "POST", f"/v1/jobs/{job_id}/retry")

    def delete_job(self, job_id: str) -> None:
        """Delete a finished job with its artifacts, checkpoints and events."""
        self._send("DELETE", f"/v1/jobs/{job_id}")

    def watch(self, job_id: str, *, last_event_id: int | None = None) -> Iterator[JobUpdate]:
        """Follow the job live (SSE ``GET /v1/jobs/{id}/stream``): yields each new ``Event``,
        ``JobProgress`` whenever status/phase/progress change, and a final ``StreamEnd``.

        A dropped stream is reopened with ``Last-Event-ID`` (the last event seen, or
        ``last_event_id`` to skip older ones), so no event is lost or repeated. Reconnects back
        off as the retry policy says (or as the server's ``retry:`` field asks) and give up with
        ``ConnectionFailed`` after ``retry.attempts`` failures in a row without a message.
        """
        failures = 0
        while True:
            decoder = SSEDecoder()
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            problem = "the stream closed before the job finished"
            try:
                response = self._send(
                    "GET",
                    f"/v1/jobs/{job_id}/stream",
                    headers=headers,
                    stream=True,
                    timeout=httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT_S),
                )
                with closing(response):
                    for message in iter_sse(response.iter_bytes(), decoder):
                        update = _job_update(message)
                        if update is None:
                            continue
                        failures = 0
                        if isinstance(update, Event):
                            last_event_id = update.id
                        yield update
                        if isinstance(update, StreamEnd):
                            return
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            failures += 1
            if failures >= self.retry.attempts:
                raise ConnectionFailed(
                    f"Lost the stream of job {job_id} {failures} times in a row ({problem}); "
                    f"watch again with last_event_id={last_event_id} to continue."
                )
            asked = None if decoder.retry_ms is None else decoder.retry_ms / 1000
            self.retry.wait(failures - 1, asked)

    def wait_finished(self, job_id: str) -> Job:
        """Watch the job until it ends; the finished job (its status tells how it ended)."""
        for _update in self.watch(job_id):
            pass
        return self.get_job(job_id)

    # -- artifacts and predictions ---------------------------------------------------------------

    def list_artifacts(self, job_id: str) -> list[Artifact]:
        """The files a job produced (empty until it succeeds): name, bytes, sha256."""
        rows = self._json("GET", f"/v1/jobs/{job_id}/artifacts")
        return TypeAdapter(list[Artifact]).validate_python(rows)

    def download_artifacts(
        self,
        job_id: str,
        directory: str | os.PathLike[str],
        *,
        names: Iterable[str] | None = None,
        progress: TransferProgress | bool = False,
    ) -> list[Path]:
        """Download the job's artifacts (all, or ``names``) into ``directory``; their paths.

        Each file streams to a temporary name beside its target and is renamed only once its
        size and SHA-256 match what the API recorded (``DownloadMismatch`` otherwise: nothing is
        kept). A dropped connection resumes where it stopped (``Range`` + ``If-Range``).
        """
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        artifacts = self.list_artifacts(job_id)
        if names is not None:
            wanted = set(names)
            missing = wanted - {a.name for a in artifacts}
            if missing:
                raise FoproError(
                    f"Job {job_id} has no artifact(s) {sorted(missing)}; it has "
                    f"{sorted(a.name for a in artifacts)}.",
                    code="not_found",
                    details={"missing": sorted(missing)},
                )
            artifacts = [a for a in artifacts if a.name in wanted]
        report = progress_callback(progress)
        return [self._download(artifact, folder, report) for artifact in artifacts]

    def _download(
        self, artifact: Artifact, folder: Path, progress: TransferProgress | None
    ) -> Path:
        if Path(artifact.name).name != artifact.name or artifact.name in ("", ".", ".."):
            raise FoproError(
                f"Refusing to write an artifact named {artifact.name!r} outside {folder}.",
                code="unsafe_name",
            )
        target = folder / artifact.name
        fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{artifact.name}.", suffix=".part")
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = self._fetch_into(artifact, out, progress)
                out.flush()
                os.fsync(out.fileno())
                received = out.tell()
            if received != artifact.bytes or digest != artifact.sha256:
                raise DownloadMismatch(
                    f"{artifact.name}: got {received} bytes with SHA-256 {digest}, but the API "
                    f"recorded {artifact.bytes} bytes with {artifact.sha256}; download it again.",
                    details={"name": artifact.name, "bytes": received, "sha256": digest},
                )
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return target

    def _fetch_into(self, artifact: Artifact, out: Any, progress: TransferProgress | None) -> str:
        """Stream ``artifact`` into ``out``, resuming with a Range request after a drop; the
        SHA-256 of what was written."""
        digest = hashlib.sha256()
        etag: str | None = None
        failures = 0
        while True:
            headers = {}
            if out.tell() and etag:
                headers = {"Range": f"bytes={out.tell()}-", "If-Range": etag}
            try:
                response = self._send("GET", artifact.url, headers=headers, stream=True)
                with closing(response):
                    if response.status_code != 206 and out.tell():
                        out.seek(0)  # the server sent the whole file: start over
                        out.truncate()
                        digest = hashlib.sha256()
                    etag = response.headers.get("etag")
                    for chunk in response.iter_bytes(DOWNLOAD_CHUNK_BYTES):
                        out.write(chunk)
                        digest.update(chunk)
                        if progress is not None:
                            progress(artifact.name, out.tell(), artifact.bytes)
                return digest.hexdigest()
            except httpx.TransportError as exc:
                failures += 1
                if failures >= self.retry.attempts:
                    raise ConnectionFailed(
                        f"Downloading {artifact.name} failed {failures} times ({exc}); "
                        "try again later."
                    ) from exc
                self.retry.wait(failures - 1)

    def predict(
        self,
        job_id: str,
        paths: Iterable[str | os.PathLike[str]],
        *,
        top_k: int = 5,
        threshold_profile: str | None = None,
        explain: bool = False,
        patch: int | None = None,
        precision: str = "fp32",
    ) -> Predictions:
        """Top-``top_k`` classes per image from the job's exported student (run by the API);
        ``threshold_profile`` (``sens90``, ``sens95``) adds findings at that operating point,
        ``explain`` an occlusion heat map per image (``patch`` px squares); ``precision="int8"``
        asks for the job's INT8 model (a 409 ``int8_not_published`` says why it has none)."""
        images = [Path(p) for p in paths]
        if not images:
            raise ValueError("predict needs at least one image path")
        for image in images:
            if not image.is_file():
                raise FileNotFoundError(f"No image at {image}")
        with ExitStack() as files:
            parts = [
                (
                    "files",
                    (
                        image.name,
                        files.enter_context(image.open("rb")),
                        mimetypes.guess_type(image.name)[0] or "application/octet-stream",
                    ),
                )
                for image in images
            ]
            # A prediction changes nothing on the server, so it is safe to repeat.
            return self._model(
                Predictions,
                "POST",
                f"/v1/jobs/{job_id}/predict",
                params={
                    "top_k": top_k,
                    **({"threshold_profile": threshold_profile} if threshold_profile else {}),
                    **({"explain": "occlusion"} if explain else {}),
                    **({"patch": patch} if patch is not None else {}),
                    **({"precision": precision} if precision != "fp32" else {}),
                },
                files=parts,
                idempotent=True,
            )

    # -- teachers --------------------------------------------------------------------------------

    def list_teachers(self) -> TeacherCatalog:
        """The built-in zoo (with where weights were found) and your team's own teachers."""
        return self._model(TeacherCatalog, "GET", "/v1/teachers")

    def get_teacher(self, teacher_id: str) -> TeamTeacher:
        return self._model(TeamTeacher, "GET", f"/v1/teachers/{teacher_id}")

    def upload_teacher(
        self,
        path: str | os.PathLike[str],
        name: str,
        arch: str,
        *,
        progress: TransferProgress | bool = False,
    ) -> TeamTeacher:
        """Register a teacher from a state dict file (.safetensors or torch.save) for timm
        architecture ``arch``; a worker verifies it loads before it counts (422 otherwise)."""
        weights = Path(path)
        if not weights.is_file():
            raise FileNotFoundError(f"No weights file at {weights}")
        with weights.open("rb") as handle:
            return self._model(
                TeamTeacher,
                "POST",
                "/v1/teachers",
                data={"name": name, "arch": arch},
                files={
                    "file": (
                        weights.name,
                        self._reporting(handle, weights, progress),
                        "application/octet-stream",
                    )
                },
            )

    def delete_teacher(self, teacher_id: str) -> None:
        self._send("DELETE", f"/v1/teachers/{teacher_id}")

    @staticmethod
    def _reporting(handle: Any, path: Path, progress: TransferProgress | bool) -> Any:
        report = progress_callback(progress)
        if report is None:
            return handle
        return ReportingReader(handle, path.name, path.stat().st_size, report)


_EVENT_ADAPTER: dict[str, type[BaseModel]] = {
    "job_event": Event,
    "progress": JobProgress,
    "end": StreamEnd,
}


def _job_update(message: ServerSentEvent) -> JobUpdate | None:
    """The typed update of one stream message (None for message types this client ignores)."""
    model = _EVENT_ADAPTER.get(message.event)
    if model is None:
        return None
    try:
        data = json.loads(message.data)
    except ValueError as exc:
        raise FoproError(
            f"The job stream sent a {message.event!r} message that is not JSON: {message.data!r}",
            code="bad_stream",
        ) from exc
    update = model.model_validate(data)
    assert isinstance(update, Event | JobProgress | StreamEnd)
    return update
