"""Is the student the service hands back at least as good as the reference recipe's, on the
same upload? Paired over seeds, scored on the balanced official Fashion-MNIST test set.

Per seed, one long-tailed Fashion-MNIST upload (half B of ``bench.fashion_lt``: imbalance 100
train set + 100 val images per class, 28×28 PNGs in ``train/`` and ``val/`` class folders):
- **service**: the archive goes through a real embedded service (``fopro up`` in a temp data
  dir) over HTTP: upload, validation, the frozen teacher registered as a team teacher, an ``ekd``
  job (student ``resnet18`` from random init, ``allow_random_weights``), the exported student
  downloaded and scored;
- **reference**: the released code's recipe on the same PNG files and teacher file
  (``foprokd.reference.train_reference``: per-sample PIL + torchvision transforms, fp32, Adam
  3e-4, clip 5, BSM on both heads, λ = 3, the last epoch's student).
The teacher is ``bench.fashion_lt``'s coarse-label ResNet-18 (cached; trained on half A), loaded
both ways as a timm ``resnet18`` with its ImageNet normalisation, as the service loads it.

    python -m bench.parity --seeds 0 1 2 3 4 --threads 2
    python -m bench.parity --quick            # smoke run
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from bench.fashion_lt import (
    FINE_CLASSES,
    BenchSettings,
    FashionMnist,
    coarse_teacher,
    halves,
    load_fashion_mnist,
    protocol_parser,
    protocol_settings,
    student_split,
    teacher_key,
)
from foprokd.atomic import write_json_atomic
from foprokd.data import LabelledImages
from foprokd.evaluation import evaluate_images
from foprokd.export import load_exported
from foprokd.images import to_model_rgb
from foprokd.manifest import scan_image_folder
from foprokd.reference import ReferenceRecipe, train_reference
from foprokd.runtime import seed_everything
from foprokd.student import build_student
from foprokd.zoo import load_teacher

TEACHER_NAME = "fashion-coarse"
POLL_S = 2.0


def write_upload(data: FashionMnist, train: np.ndarray, val: np.ndarray, folder: Path) -> Path:
    """The seed's images as ``folder/{train,val}/<class>/<index>.png`` plus the same tree as
    ``folder.zip`` (what a user would upload)."""
    archive = folder.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w") as out:
        for split, indices in (("train", train), ("val", val)):
            for index in indices:
                # Class folders named by label index: "T-shirt/top" holds a slash, and numeric
                # names keep the label order (``foprokd.manifest.class_order``) on both sides.
                name = f"{split}/{data.train_labels[index]}/{index:05d}.png"
                buffer = io.BytesIO()
                Image.fromarray(data.train_images[index]).save(buffer, format="PNG")
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(buffer.getvalue())
                entry = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
                entry.external_attr = 0o100644 << 16  # a regular file (writestr's default has
                entry.compress_type = zipfile.ZIP_DEFLATED  # no file type: refused today)
                out.writestr(entry, buffer.getvalue())
    return archive


def test_images(data: FashionMnist, size: int, limit: int | None) -> LabelledImages:
    """The official test set through the engine's resize policy (as served predictions see it)."""
    count = len(data.test_labels) if limit is None else limit
    pixels = np.stack(
        [
            np.asarray(to_model_rgb(Image.fromarray(image), size), dtype=np.uint8).transpose(
                2, 0, 1
            )
            for image in data.test_images[:count]
        ]
    )
    labels = torch.from_numpy(data.test_labels[:count].astype(np.int64))
    return LabelledImages(torch.from_numpy(pixels), labels, list(FINE_CLASSES))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def embedded_service(data_dir: Path) -> Iterator[tuple[str, str]]:
    """``fopro up`` on the embedded defaults in ``data_dir``: yields (base URL, admin key)."""
    env = {**os.environ, "FOPRO_DATA_DIR": str(data_dir)}
    me = [sys.executable, "-m", "fopro"]
    subprocess.run([*me, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run([*me, "admin", "create-team", "bench"], env=env, check=True, capture_output=True)
    key = subprocess.run(
        [*me, "admin", "create-key", "bench", "--role", "admin"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port = free_port()
    log = (data_dir / "service.log").open("wb")
    process = subprocess.Popen(
        [*me, "up", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the service did not become ready; see {log.name}")
            time.sleep(0.5)
        yield url, key
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_for(client: httpx.Client, path: str, done: set[str], what: str) -> dict[str, Any]:
    """Poll ``path`` until its ``status`` is in ``done``; print progress while waiting."""
    last = ""
    while True:
        body = client.get(path).raise_for_status().json()
        status = body["status"]
        progress = body.get("progress") or {}
        line = f"    {what}: {status} {progress.get('phase', body.get('phase') or '')} "
        line += f"{progress.get('percent', '')}"
        if line != last:
            print(line, flush=True)
            last = line
        if status in done:
            return dict(body)
        time.sleep(POLL_S)


def service_student(
    url: str, key: str, archive: Path, teacher_file: Path, seed: int, settings: BenchSettings
) -> tuple[Path, dict[str, Any]]:
    """Upload, distil with ``ekd`` and download the student through the HTTP API."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        with archive.open("rb") as handle:
            created = client.post(
                "/v1/datasets",
                data={"name": f"fashion-lt-seed{seed}"},
                files={"file": (archive.name, handle, "application/zip")},
            ).raise_for_status()
        dataset = wait_for(
            client, f"/v1/datasets/{created.json()['id']}", {"ready", "invalid"}, "dataset"
        )
        if dataset["status"] != "ready":
            raise RuntimeError(f"the upload was refused: {dataset['problems'][:3]}")
        teachers = client.get("/v1/teachers").raise_for_status().json()["team"]
        if not any(t["name"] == TEACHER_NAME for t in teachers):
            with teacher_file.open("rb") as handle:
                client.post(
                    "/v1/teachers",
                    data={"name": TEACHER_NAME, "arch": "resnet18"},
                    files={"file": (teacher_file.name, handle)},
                ).raise_for_status()
        job = client.post(
            "/v1/jobs",
            json={
                "dataset_id": dataset["id"],
                "teacher": TEACHER_NAME,
                "student": "resnet18",
                "method": "ekd",
                "params": {
                    "epochs": settings.epochs,
                    "batch_size": settings.batch_size,
                    "image_size": settings.image_size,
                    "seed": seed,
                    "allow_random_weights": True,
                    # The service's default precision (bf16 on a CPU with native bf16
                    # kernels, else fp32) unless --cpu-fp32.
                    **({} if settings.cpu_bf16 else {"cpu_bf16": False}),
                },
            },
        ).raise_for_status()
        finished = wait_for(
            client, f"/v1/jobs/{job.json()['id']}", {"succeeded", "failed", "cancelled"}, "job"
        )
        if finished["status"] != "succeeded":
            raise RuntimeError(f"the job ended {finished['status']}: {finished['failure_reason']}")
        folder = archive.with_name(f"student-seed{seed}")
        folder.mkdir(exist_ok=True)
        for name in ("student.safetensors", "config.json"):
            response = client.get(f"/v1/jobs/{finished['id']}/artifacts/{name}")
            (folder / name).write_bytes(response.raise_for_status().content)
    return folder, finished


def reference_student_report(
    folder: Path,
    teacher_file: Path,
    seed: int,
    settings: BenchSettings,
    test: LabelledImages,
    train_counts: list[int],
) -> dict[str, Any]:
    """The reference recipe on the same files and teacher; its last epoch scored on ``test``."""
    teacher = load_teacher("resnet18", weights=teacher_file)
    seed_everything(seed)
    student = build_student("resnet18", len(FINE_CLASSES), teacher.feature_dim, allow_random=True)
    recipe = ReferenceRecipe(epochs=settings.epochs, batch_size=settings.batch_size, seed=seed)

    def log(epoch: int, loss: float) -> None:
        if epoch % 5 == 0 or epoch == recipe.epochs:
            print(f"    reference epoch {epoch}/{recipe.epochs}: loss {loss:.4f}", flush=True)

    rows = scan_image_folder(folder)
    train_reference(
        student,
        teacher,
        rows,
        root=folder,
        classes=[str(label) for label in range(len(FINE_CLASSES))],
        image_size=settings.image_size,
        recipe=recipe,
        on_epoch=log,
    )
    return evaluate_images(
        student.classifier(), test, train_counts=train_counts, batch_size=256, device="cpu"
    )


def summary(report: dict[str, Any]) -> dict[str, float | None]:
    groups = report["shot_groups"]
    return {
        "balanced_accuracy": report["balanced_accuracy"],
        **{f"{g}_shot_accuracy": groups.get(g, {}).get("accuracy") for g in ("many", "few")},
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| seed | service ekd (%) | reference (%) | service − reference | few-shot s / r (%) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        s, r = row["service"], row["reference"]
        few = (
            f"{100 * (s['few_shot_accuracy'] or 0):.1f} / {100 * (r['few_shot_accuracy'] or 0):.1f}"
        )
        lines.append(
            f"| {row['seed']} | {100 * s['balanced_accuracy']:.2f} "
            f"| {100 * r['balanced_accuracy']:.2f} | {100 * row['difference']:+.2f} | {few} |"
        )
    return "\n".join(lines)


def headline(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "parity: no seed finished"
    diffs = [row["difference"] for row in rows]
    wins = sum(d >= 0 for d in diffs)
    return (
        f"parity: service ekd − reference {100 * statistics.fmean(diffs):+.2f} points on average, "
        f"at least as good on {wins}/{len(diffs)} seeds"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = protocol_parser(__doc__, "bench/results/parity.json")
    parser.add_argument("--resume", action="store_true", help="keep the seeds already in --out")
    args = parser.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so the embedded service and its workers are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    settings = protocol_settings(args)
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the service's training child
    data = load_fashion_mnist(args.data_dir)
    _, record = coarse_teacher(data, settings, args.cache_dir, "cpu")
    teacher_file = args.cache_dir / f"teacher-{teacher_key(settings)}.safetensors"
    test = test_images(data, settings.image_size, settings.test_images)
    _, half_b = halves(len(data.train_labels))
    rows: list[dict[str, Any]] = []
    if args.resume and args.out.is_file():
        rows = [r for r in json.loads(args.out.read_text())["runs"] if r["seed"] in args.seeds]
    with tempfile.TemporaryDirectory(prefix="fopro-parity-") as scratch:
        root = Path(scratch)
        with embedded_service(root / "service") as (url, key):
            for seed in args.seeds:
                if any(r["seed"] == seed for r in rows):
                    continue
                train_idx, val_idx = student_split(data.train_labels, half_b, settings, seed)
                folder = root / f"upload-seed{seed}"
                archive = write_upload(data, train_idx, val_idx, folder)
                counts = np.bincount(data.train_labels[train_idx], minlength=10).tolist()
                print(f"seed {seed}: {len(train_idx)} train images {counts}", flush=True)
                start = time.perf_counter()
                student_dir, job = service_student(url, key, archive, teacher_file, seed, settings)
                exported = load_exported(student_dir)
                service_report = evaluate_images(
                    exported.classifier, test, train_counts=counts, batch_size=256, device="cpu"
                )
                service_s = time.perf_counter() - start
                start = time.perf_counter()
                reference_report = reference_student_report(
                    folder, teacher_file, seed, settings, test, counts
                )
                row = {
                    "seed": seed,
                    "service": summary(service_report),
                    "reference": summary(reference_report),
                    "service_best_epoch": job["metrics"].get("best_epoch"),
                    "service_minutes": service_s / 60,
                    "reference_minutes": (time.perf_counter() - start) / 60,
                }
                row["difference"] = (
                    row["service"]["balanced_accuracy"] - row["reference"]["balanced_accuracy"]
                )
                rows.append(row)
                print(
                    f"  service {100 * row['service']['balanced_accuracy']:.2f}%  reference "
                    f"{100 * row['reference']['balanced_accuracy']:.2f}%  "
                    f"({100 * row['difference']:+.2f} points)",
                    flush=True,
                )
                write_json_atomic(
                    args.out,
                    {
                        "settings": dataclasses.asdict(settings),
                        "teacher": record,
                        "seeds": args.seeds,
                        "runs": rows,
                        "table": table(rows),
                    },
                )
                shutil.rmtree(folder)
    print(f"\n{table(rows)}\n\nresults: {args.out}")
    print(headline(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
