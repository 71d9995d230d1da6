"""The one place configuration is read: environment variables prefixed ``FOPRO_``.

Defaults run the whole service on a laptop (SQLite, kombu's SQLAlchemy transport on SQLite, a local
object directory); production points the same fields at PostgreSQL, Redis and S3/MinIO.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-change-me"
DEV_GROUP_SALT = "dev-group-salt-change-me"


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class Settings(BaseSettings):
    """Service configuration; every field maps to ``FOPRO_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="FOPRO_", extra="ignore")

    env: Environment = Environment.development
    data_dir: Path = Path(".fopro")

    database_url: str = ""
    # Connections each process may hold (PostgreSQL; SQLite ignores them): the pool, and extra
    # ones opened under load and closed after. Sized so that 2 API workers and a few job workers
    # stay well inside PostgreSQL's default max_connections of 100; a request finding the pool
    # busy waits for a connection (up to 30 s) instead of failing.
    db_pool_size: int = Field(default=5, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    broker_url: str = ""
    result_backend: str = ""

    storage_url: str = ""
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_region: str = "us-east-1"
    s3_secure: bool = False
    # host:port browsers use for presigned URLs when it differs from s3_endpoint (e.g. in compose).
    s3_public_endpoint: str | None = None

    # The local object store refuses a write that would leave less free space than this on its
    # disk (0: only a full disk stops it); the database and logs often share that disk.
    local_store_min_free_bytes: int = Field(default=0, ge=0)

    weights_dir: Path | None = None

    secret_key: str = DEV_SECRET
    download_url_ttl_s: int = Field(default=300, ge=10, le=7 * 24 * 3600)
    # Keys the hash that turns DICOM PatientIDs and CSV patient ids into group names; per
    # deployment and secret, so the names cannot be matched back to IDs by hashing guesses.
    group_salt: str = DEV_GROUP_SALT

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # A worker's own /metrics (tasks, lease renewals, validation throughput); 0 = not served.
    # Several workers on one host need one port each (`fopro worker --metrics-port`).
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    # CPU threads of a job's training process (torch intra-op); 0 = torch's default, every core
    # it sees. Several workers sharing a host should split its cores between them: 4 training
    # processes of 2 threads each on 2 cores ran 2.2x slower than with 1 thread each
    # (BENCHMARKS.md, the scale bench). A container's CPU quota is not seen by torch either.
    train_threads: int = Field(default=0, ge=0, le=1024)

    max_upload_bytes: int = Field(default=20 * 1024**3, gt=0)
    max_file_bytes: int = Field(default=64 * 1024**2, gt=0)
    max_images: int = Field(default=500_000, gt=0)
    max_image_pixels: int = Field(default=64_000_000, gt=0)
    max_compression_ratio: float = Field(default=200.0, gt=1.0)

    lease_seconds: int = Field(default=60, ge=5)
    heartbeat_seconds: int = Field(default=10, ge=1)
    max_attempts: int = Field(default=3, ge=1, le=100)
    # After a cancel request, how long a training process gets to stop on its own before it is
    # killed (it stops at the next step; a slow checkpoint upload can take a while).
    cancel_grace_seconds: int = Field(default=30, ge=1)
    # A queued job no worker picked up is sent to the broker again after this long (a broker
    # that lost the message: Redis without persistence, restarted).
    resend_after_seconds: int = Field(default=1800, ge=60)

    # Quotas per team; `fopro admin set-quota TEAM ...` overrides them on the team's row.
    max_active_jobs: int = Field(default=10, ge=1)  # queued + running
    max_stored_bytes: int = Field(default=500 * 1024**3, ge=1)  # datasets + artifacts + teachers
    max_datasets: int = Field(default=100, ge=1)
    max_active_keys: int = Field(default=50, ge=1)  # neither revoked nor expired

    # Requests per API key in the `limits` notation ("600/minute", "20/second").
    rate_limit: str = "600/minute"
    # Where the counts live: shared by every API process. Default: the broker's Redis when the
    # broker is Redis, else this process's memory (the embedded deployment has one API).
    rate_limit_storage_url: str = ""
    # How long an API process may answer from a key it resolved recently instead of reading the
    # key's row again (0: read it on every request). A revoke or rotation through this process's
    # API takes effect at once; one made elsewhere (another API process, `fopro admin`) takes
    # effect on this process within this many seconds. An expiry always takes effect at once.
    key_cache_seconds: float = Field(default=0, ge=0, le=300)
    # Threads per API process that run the routes dashboards poll (GET /v1/jobs and
    # /v1/jobs/{id}) at once; more requests wait their turn on the event loop. Few on purpose:
    # threads beyond the cores only fight over the GIL (35 % more req/s with 4 than with 40 on
    # 2 cores, BENCHMARKS.md). A server database's latency is what more threads would hide.
    read_threads: int = Field(default=4, ge=1, le=256)
    # How long a rotated key keeps working when the rotation does not say.
    key_rotation_grace_s: int = Field(default=24 * 3600, ge=0, le=30 * 24 * 3600)

    # When a job's `int8: auto` publishes its INT8 student: drops as fractions (0.01 = 1 point),
    # and the FP32/INT8 batch-1 p50 latency ratio on the worker (0 = no speed requirement).
    int8_max_balanced_accuracy_drop: float = Field(default=0.01, ge=0, le=1)
    int8_max_few_shot_recall_drop: float = Field(default=0.05, ge=0, le=1)
    int8_min_speedup: float = Field(default=1.0, ge=0)
    # Occlusion explanations (`predict?explain=occlusion`): onnxruntime forward passes allowed
    # per request, over all its images (each image costs one pass per patch, plus one).
    explain_max_passes: int = Field(default=1024, ge=1)

    # The Ed25519 key (PEM) workers sign each job's bundle.json with and the API publishes the
    # public half of (GET /.well-known/fopro-signing-key). Created on first use; every API and
    # worker process must see the same file (the embedded data dir, a shared volume in compose).
    # Default: DATA_DIR/keys/bundle-signing-ed25519.pem.
    bundle_signing_key: Path | None = None

    # Audit records older than this are purged (`fopro admin purge-audit`, and every reaper).
    audit_retention_days: int = Field(default=400, ge=1, le=36500)

    # Hostile or careless clients: bodies and predictions have bounds.
    max_json_body_bytes: int = Field(default=1024**2, ge=1024)
    # A request body that sends nothing for this long is dropped (a stalled upload).
    body_idle_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # A request that takes longer than this to start answering is logged at WARNING with its
    # route, status and request id (0: never).
    slow_request_s: float = Field(default=1.0, ge=0)
    max_predict_bytes: int = Field(default=64 * 1024**2, gt=0)  # all images of one request
    max_predict_image_pixels: int = Field(default=25_000_000, gt=0)  # one image, as stored
    # Pixels decoded per request (a large JPEG decodes reduced; other formats count whole).
    max_predict_pixels: int = Field(default=150_000_000, gt=0)
    max_concurrent_predictions: int = Field(default=2, ge=1)  # per API process; 429 beyond

    # HTTP hardening: HSTS when the request came over TLS, or always behind a TLS proxy that
    # does not forward the scheme; CORS only for these origins (empty: off).
    hsts_max_age_s: int = Field(default=31_536_000, ge=0)
    hsts_behind_proxy: bool = False
    cors_origins: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fill_defaults_and_check(self) -> Self:
        data_dir = self.data_dir.expanduser().resolve()
        self.data_dir = data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{data_dir / 'fopro.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{data_dir / 'broker.db'}"
        if not self.result_backend:
            self.result_backend = f"db+sqlite:///{data_dir / 'results.db'}"
        if not self.storage_url:
            self.storage_url = f"file://{data_dir / 'objects'}"
        if not self.rate_limit_storage_url:
            redis = self.broker_url.startswith(("redis://", "rediss://"))
            self.rate_limit_storage_url = self.broker_url if redis else "memory://"
        _check_rate_limit(self.rate_limit)
        if self.bundle_signing_key is None:
            self.bundle_signing_key = data_dir / "keys" / "bundle-signing-ed25519.pem"
        self.bundle_signing_key = self.bundle_signing_key.expanduser().resolve()
        if self.weights_dir is None:
            self.weights_dir = data_dir / "weights"
        self.weights_dir = self.weights_dir.expanduser().resolve()
        scheme = urlsplit(self.storage_url).scheme
        if scheme not in {"file", "s3"}:
            raise ValueError(
                f"FOPRO_STORAGE_URL must start with file:// or s3://, got {self.storage_url!r}"
            )
        if scheme == "s3" and not self.s3_endpoint:
            raise ValueError("FOPRO_STORAGE_URL is s3://...: set FOPRO_S3_ENDPOINT (host:port)")
        if self.env is Environment.production and self.secret_key == DEV_SECRET:
            raise ValueError(
                "FOPRO_SECRET_KEY still has the development default; in production set a long "
                "random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
            )
        if self.env is Environment.production and len(self.secret_key) < 32:
            raise ValueError("FOPRO_SECRET_KEY must be at least 32 characters in production")
        if self.env is Environment.production and self.group_salt == DEV_GROUP_SALT:
            raise ValueError(
                "FOPRO_GROUP_SALT still has the development default; in production set a long "
                "random value (and keep it: changing it renames every patient group)"
            )
        return self

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def broker_is_embedded(self) -> bool:
        return self.broker_url.startswith("sqla+")

    def ensure_dirs(self) -> None:
        """Create the data and weights directories the embedded defaults write into."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        assert self.weights_dir is not None
        self.weights_dir.mkdir(parents=True, exist_ok=True)


def _check_rate_limit(rate: str) -> None:
    """Refuse a FOPRO_RATE_LIMIT the `limits` library cannot read, at start-up rather than on
    the first request. Only the API installs `limits`; workers never rate-limit."""
    try:
        from limits import parse
    except ImportError:
        return
    try:
        parse(rate)
    except ValueError as exc:
        raise ValueError(
            f"FOPRO_RATE_LIMIT={rate!r} is not a rate such as '600/minute' or '20 per second'"
        ) from exc


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
