"""An offline Hugging Face hub cache laid out on disk, for weights-lookup tests."""

from __future__ import annotations

from pathlib import Path


def fill_hub_cache(cache: Path, hf_hub_id: str, filename: str = "model.safetensors") -> Path:
    """Lay out a repo the way huggingface_hub caches it: refs/main -> snapshots/<rev>/file."""
    repo = cache / ("models--" + hf_hub_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("feedbeef")
    (repo / "snapshots" / "feedbeef").mkdir(parents=True)
    path = repo / "snapshots" / "feedbeef" / filename
    path.write_bytes(b"weights")
    return path
