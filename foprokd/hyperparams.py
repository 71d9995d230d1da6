"""The training vocabulary as one definition: methods, hyper-parameters, defaults, ranges, help.

Torch-free (pydantic only), so the API validates a job request with the very fields the engine
trains with: ``HyperParams`` is what a job may set (the paper's knobs), ``TrainConfig`` adds the
method and the engine's own switches. Defaults follow the paper and its released code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from foprokd.splits import MAX_SEED

Method = Literal["ce", "bsm", "ekd", "fopro", "fopro_akd"]
METHODS: tuple[str, ...] = get_args(Method)
METHOD_HELP: dict[str, str] = {
    "ce": "Cross-entropy on the student alone (no teacher): the plain baseline.",
    "bsm": "Balanced softmax on the student alone (no teacher): the long-tail baseline.",
    "ekd": "Effective KD: balanced softmax on both heads + cosine alignment of the student's "
    "projection with the frozen teacher's features f(x).",
    "fopro": "EKD against the teacher's features of Fourier-prompted images f(x~): the Fourier "
    "Prompt Generator re-weights the amplitude spectrum the teacher sees.",
    "fopro_akd": "FoPro-KD: as fopro, and after a warm-up the prompt generator also plays "
    "adversary to the student (Adversarial KD).",
}
# What wins across the benchmarks (BENCHMARKS.md, issue 16): `fopro` is level with `ekd` on the
# shift-free Fashion-MNIST-LT (78.30 vs 78.20 test) and above it through the scanner shift (val
# 68.70 vs 67.74); `fopro_akd` is below both on each, and `bsm` wins only through the shift.
DEFAULT_METHOD: Method = "fopro"
TEACHER_METHODS = frozenset({"ekd", "fopro", "fopro_akd"})
PROMPT_METHODS = frozenset({"fopro", "fopro_akd"})
StudentInit = Literal["imagenet", "scratch"]
Int8Mode = Literal["auto", "always", "never"]


class HyperParams(BaseModel):
    """What a distillation job may set. ``image_size`` is S of the (S, S) training images.

    Every number is finite and bounded: an infinite or huge weight fails a run at its first
    step (or is not even JSON), so it is refused when the job is submitted."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    epochs: int = Field(default=30, ge=1, le=1000, description="Passes over the train split.")
    # The projection head has BatchNorm, which cannot train on a batch of one image.
    batch_size: int = Field(default=32, ge=2, le=4096, description="Images per student step.")
    image_size: int = Field(
        default=224, ge=8, le=1024, description="Training resolution S in pixels."
    )
    lr: float = Field(default=3e-4, gt=0, le=10, description="Adam learning rate of the student.")
    weight_decay: float = Field(default=0.0, ge=0, le=1, description="Adam weight decay.")
    grad_clip_norm: float = Field(
        default=5.0,
        ge=0,
        le=1e4,
        description="Clip the student's gradient norm; 0 disables clipping.",
    )
    distill_weight: float = Field(
        default=3.0, ge=0, le=1e3, description="λ of the EKD cosine term."
    )
    fpg_lr: float = Field(
        default=1e-3, gt=0, le=10, description="Adam learning rate of the Fourier prompt generator."
    )
    fpg_alpha: float = Field(default=0.5, gt=0, lt=1, description="Amplitude mask in [1-α, 1+α].")
    fpg_beta: float = Field(
        default=1.0, ge=0, le=1e3, description="Weight of the FPG's BSM probe term."
    )
    fpg_gamma: float = Field(
        default=0.1, ge=0, le=1e3, description="Weight of the mask regulariser."
    )
    akd_warmup_epochs: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Explore-only epochs before the FPG turns adversarial.",
    )
    augment: bool = Field(default=True, description="The paper's affine/colour/flip augmentation.")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seeds models, batches, augments.")
    student_init: StudentInit = Field(
        default="imagenet",
        description="Student backbone start: imagenet = its installed ImageNet weights (a run "
        "without them is refused); scratch = random init, as the released FoPro-KD command "
        "trains it (no student weights needed).",
    )
    int8: Int8Mode = Field(
        default="auto",
        description="INT8 ONNX student: auto = published only when it keeps balanced accuracy "
        "and few-shot recall (and is faster on the worker's CPU), else the model card says why "
        "it was withheld; always = published whatever its scores; never = not made.",
    )


class TrainConfig(HyperParams):
    """One training run: the job's hyper-parameters, the method and the engine's switches."""

    method: Method = DEFAULT_METHOD
    fpg_steps: int = Field(default=1, ge=1, description="FPG steps per student step.")
    fpg_noise_dim: int = Field(default=64, ge=1)
    fpg_embed_dim: int = Field(default=64, ge=1)
    fpg_hidden_dim: int = Field(default=256, ge=1)
    fpg_grid: tuple[int, int] = Field(default=(16, 9), description="Mask control grid (H, W).")
    fpg_band: tuple[float, float] | None = Field(
        default=None, description="(r_low, r_high) radial band the mask acts on; None = all."
    )
    fpg_clamp: bool = True
    fpg_statistics_weight: float = Field(
        default=0.0,
        ge=0,
        le=1e3,
        description="δ of the FPG's teacher-statistics term (this engine's addition, 0 = the "
        "paper): KL of prompted images' moments at each teacher BatchNorm layer to its running "
        "moments, pulling the prompt toward the teacher's training domain.",
    )
    akd_weight: float = Field(
        default=1.0, ge=0, description="Weight of the adversarial cosine term in the FPG step."
    )
    device: str = Field(default="auto", description='"auto" = cuda if available, else cpu.')
    amp: bool = Field(default=True, description="bf16 autocast on CUDA GPUs that support it.")
    cpu_bf16: bool = Field(
        default=True,
        description="bf16 autocast on CPUs with native bf16 kernels (AVX512-BF16 or AMX; other "
        "CPUs train in fp32): 1.7x faster at 32 px and 3x at 224 px, with the same accuracy "
        "over 5 paired seeds on the Fashion-MNIST-LT benchmark (BENCHMARKS.md). Some oneDNN "
        "bf16 kernels were seen to return wrong gradients on tiny feature maps; a gradient "
        "check at the start falls back to fp32 when they do, and images smaller than the "
        "student's total stride (32 px for the zoo) train in fp32. False: fp32 everywhere.",
    )
    channels_last: bool = Field(
        default=True,
        description="channels_last tensors (CUDA; on the CPU only together with cpu_bf16).",
    )
    compile: bool = Field(default=False, description="torch.compile the student and teacher.")
    eval_batch_size: int = Field(default=128, ge=1)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (tuples become lists): safe for JSON and for checkpoints."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a typo must not pass silently)."""
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {unknown}")
        return cls.model_validate(dict(data))
