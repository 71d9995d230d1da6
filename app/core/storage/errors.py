"""The typed errors every object store raises, whatever the backend."""

from __future__ import annotations


class ObjectStoreError(Exception):
    """Base class of every error raised by an object store."""


class InvalidObjectKey(ObjectStoreError, ValueError):
    """The key is not a safe relative `/`-separated path, or collides with another object."""


class ObjectNotFound(ObjectStoreError, KeyError):
    """No object is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key

    def __str__(self) -> str:
        # KeyError would print the repr of the message; keep it readable.
        return str(self.args[0])


class InvalidRange(ObjectStoreError, ValueError):
    """A byte range is negative or empty, or starts at or past the end of the object (HTTP 416)."""


class ObjectSizeMismatch(ObjectStoreError, ValueError):
    """A stream delivered more or fewer bytes than the size declared for it."""


class StoreUnavailable(ObjectStoreError):
    """The store cannot be reached or refuses us (network, credentials, permissions)."""


class StorageFull(ObjectStoreError):
    """The store has no room for the object (its disk is full or below its free-space floor);
    nothing of the object was kept."""


class MultipartUnsupported(ObjectStoreError):
    """The backend has no client-side multipart uploads (the local directory store)."""


class MultipartUploadInvalid(ObjectStoreError, ValueError):
    """A multipart upload id is unknown or its part list does not match the uploaded parts."""


class StorageConfigError(ObjectStoreError, ValueError):
    """`storage_url` or the S3 settings cannot describe a store."""
