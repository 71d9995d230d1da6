"""bench/fashion_lt.py end to end on generated IDX files: the benchmark must not rot in CI.

The real dataset (Debian's dataset-fashion-mnist) is not needed: a stand-in with the same file
format and class-dependent stripes runs ``--quick`` for every method in seconds.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from bench import domain_gap, fashion_lt
from foprokd.hyperparams import METHODS


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format: magic (0, 0, uint8 code 0x08, ndim), big-endian dims, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    with gzip.open(path, "wb") as out:
        out.write(header + array.astype(np.uint8).tobytes())


def stand_in(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """28×28 grey images whose stripe period depends on the label, plus noise."""
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    columns = np.arange(28)
    images = np.empty((n, 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        stripes = 127 + 100 * np.sin(2 * np.pi * columns / (3 + label))
        noise = rng.normal(0, 20, (28, 28))
        images[i] = np.clip(stripes[None, :] + noise, 0, 255)
    return images, labels


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, n in (("train", 2400), ("t10k", 600)):
        images, labels = stand_in(n, rng)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def test_quick_run_reports_every_method(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    code = fashion_lt.main(
        [
            "--quick",
            "--data-dir",
            str(data_dir),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--threads",
            "1",
        ]
    )
    assert code == 0
    results = json.loads(out.read_text())
    assert [row["method"] for row in results["runs"]] == list(METHODS)
    for row in results["runs"]:
        assert 0.0 <= row["test_balanced_accuracy"] <= 1.0
        assert row["few_shot_classes"]  # the smallest classes are few-shot at n_max 40
        fpg = row["fpg_diagnostics"]
        if row["method"] in ("fopro", "fopro_akd"):
            assert 0.0 < fpg["mask_mean_abs_gain"] <= fpg["mask_max_abs_gain"] <= 0.5  # α
            assert -1.0 <= fpg["teacher_cosine_prompted_vs_raw"] <= 1.0
        else:
            assert fpg is None
    assert 0.0 <= results["teacher_linear_probe"]["0"] <= 1.0
    assert "| fopro_akd |" in results["table"]
    # The teacher is kept on disk under a key of what changes its weights, for later runs.
    cached = list((tmp_path / "cache").glob("teacher-*.safetensors"))
    assert [path.stem for path in cached] == [f"teacher-{results['teacher']['key']}"]


def test_missing_dataset_names_the_files_and_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        fashion_lt.load_fashion_mnist(tmp_path)
    message = str(stopped.value.code)
    assert "train-images-idx3-ubyte.gz" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_domain_gap_quick_run_reports_probes_pairs_and_masks(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gap.json"
    arguments = ["--quick", "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache")]
    arguments += ["--out", str(out), "--threads", "1", "--methods", "bsm", "ekd", "fopro"]
    assert domain_gap.main(arguments) == 0
    results = json.loads(out.read_text())
    assert [row["method"] for row in results["runs"]] == ["bsm", "ekd", "fopro"]
    probe = results["teacher_linear_probe"]["0"]
    assert 0.0 <= probe["shifted"] <= 1.0
    assert 0.0 <= probe["unshifted"] <= 1.0
    fopro = results["runs"][2]
    assert -1.0 <= fopro["mask_agreement"] <= 1.0
    assert "| fopro − ekd |" in results["table"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("domain gap: fopro − ekd")
    # A second call with --resume runs nothing again.
    assert domain_gap.main([*arguments, "--resume"]) == 0
    assert "resuming: 3 runs" in capsys.readouterr().out
