"""Validation of an uploaded archive, pure Python + PIL: reading entries (``archive``), checking
images (``images``), scanning entries against the limits (``entries``), labels and splits
(``labels``), and ``validation.validate_archive`` tying them together. Nothing here touches the
database or the object store; ``workers.ingest`` supplies that I/O."""
