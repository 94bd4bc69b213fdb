"""One configuration object for every command.

Precedence (later wins): dataclass defaults < preset YAML (`--preset ferplus`) < `--config FILE.yaml`
< `--set section.key=value` < explicit command-line flags. Unknown keys are errors that name the valid
ones (with a "did you mean"), values are type-checked, and YAML is only ever read with `safe_load`.
The resolved config is saved in each run directory and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gmenet_cli.errors import UsageError


@dataclass
class PrepareConfig:
    """How `gmenet prepare` turns a dataset into HR/LR pairs."""

    hr_size: int = 0  # 0 = the source's native size (48 for FER2013/FERPlus, 112 for RAF-DB/ExpW/AffectNet)
    scales: list[int] = field(default_factory=lambda: [4])
    method: str = "area"  # area | bicubic | bilinear | nearest
    blur_sigma: float = 0.0  # Gaussian blur (HR pixels) before downsampling; 0 = off
    noise_std: float = 0.0  # Gaussian noise on the LR face, in 0..255 units; 0 = off
    jpeg_quality: int = 0  # JPEG round-trip of the LR face; 0 = off
    seed: int = 0
    classes: int = 0  # 0 = the source's default (8 for FERPlus, 7 otherwise); 7 drops contempt
    label_mode: str = "majority"
    channels: int = 0  # 0 = keep the source's (1 for FER2013/FERPlus, 3 for colour sources)
    val_ratio: float = 0.1  # used only where the source has no official split
    test_ratio: float = 0.1
    group_regex: str = ""  # folder source: images whose names share this regex's match stay in one split
    margin: float = 0.0  # box sources (ExpW, AffectNet): extra context around the face box, fraction of size


@dataclass
class ModelConfig:
    name: str = "gmenet_s2"
    teacher: str = "teacher_s2"  # architecture `distill-teacher` trains
    kwargs: dict = field(default_factory=dict)  # passed to create_model (ablation switches live here)


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.05  # peak learning rate at batch base_batch
    weight_decay: float = 5e-4
    momentum: float = 0.9  # sgd only; under onecycle it cycles within +-0.05 of this, against the learning rate
    nesterov: bool = True  # sgd only
    schedule: str = "onecycle"  # onecycle | cosine | step | constant
    warmup_epochs: float = 1.0  # cosine/step/constant: linear warm-up from 1% of the peak
    pct_start: float = 0.3  # onecycle: fraction of the steps spent rising to the peak (torch's OneCycleLR)
    base_batch: int = 128  # `lr` is the peak for this global batch; other batch sizes scale it (see scale_lr)
    # how lr follows batch_size x processes / base_batch: auto (linear for sgd, sqrt for adamw) | linear | sqrt | none
    scale_lr: str = "auto"
    step_epochs: list[int] = field(default_factory=list)  # step schedule: epochs at which lr *= 0.1
    grad_clip: float = 5.0  # 0 = off


@dataclass
class TrainConfig:
    epochs: int = 20
    teacher_epochs: int = 0  # distill-teacher's epochs when a preset wants them to differ; 0 = epochs
    batch_size: int = 128
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA
    cpu_bf16: bool = False  # bf16 autocast on the CPU too, where it has AMX / AVX512-BF16 (speed: BENCHMARKS.md)
    channels_last: bool = True  # NHWC activations: faster convolutions on CUDA and on the CPU
    compile: bool = False  # torch.compile the trained model
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: no code generation, for checks)
    label_smoothing: float = 0.0
    soft_labels: bool = False  # train on FERPlus vote distributions (every FERPlus store has them)
    # with soft_labels: this share of each target is the face's majority label, the rest its vote distribution
    # (0 = the votes alone, 1 = the majority label alone, as soft_labels false)
    majority_mix: float = 0.0
    # tau of the logit-adjusted loss (Menon et al. 2021): rare classes get a margin; 0 = off, 1 = balanced softmax
    logit_adjust: float = 0.0
    # deferred re-weighting (Cao et al. 2019): from this fraction of the epochs on, the classification loss
    # weights each class by its class-balanced weight (Cui et al. 2019, beta 0.9999); 0 = off
    drw: float = 0.0
    ema: float = 0.998  # decay of an exponential moving average of the weights (0 = off); validated and saved
    tta: bool = True  # validation averages the logits of each face and its mirror image (as evaluate does)
    lowres: str = "online"  # online: LR faces degraded on the device from each augmented HR face, every epoch;
    #                         prepared: the store's LR bytes, augmented like their HR face (blur/noise/JPEG stores)
    flip: bool = True  # horizontal flip (applied identically to HR and LR)
    scales: list[int] = field(default_factory=list)  # student LR scales; [] = every scale in the store
    val_split: str = "val"
    holdout: float = 0.1  # stores without val_split: this seeded fraction of train chooses best.pt
    threads: int = 0  # torch CPU threads; 0 = torch's default
    init: str = ""


@dataclass
class AugmentConfig:
    """On-the-fly augmentation of the HR face (teacher, and the online LR faces degraded from it), drawn per
    sample and applied on the device as one affine warp; flips follow train.flip."""

    shift: float = 4.0  # random translation, HR pixels (up to +-shift in x and y)
    scale: float = 0.1  # random zoom in [1 - scale, 1 + scale]
    rotate: float = 10.0  # random rotation in degrees, [-rotate, rotate]
    erase: float = 0.0  # probability of random erasing (a grey box of 2-20% of the face)
    # Other cameras (photometric and sensor changes, drawn per face; 0 = off). They act on the augmented HR
    # face, so the student's LR face, made from it, carries them too; noise is added at each view's own size.
    brightness: float = 0.0  # add a uniform offset in [-brightness, brightness] (fraction of the 0..1 range)
    contrast: float = 0.0  # scale the deviation from the face's mean by a factor in [1 - contrast, 1 + contrast]
    gamma: float = 0.0  # raise to a power drawn log-uniformly in [1 / (1 + gamma), 1 + gamma]
    blur: float = 0.0  # probability of a Gaussian blur, sigma uniform in 0.3-1.5 HR pixels (defocus, motion)
    noise: float = 0.0  # sensor noise: Gaussian, std uniform in [0, noise] (0..255 units), at each view's size
    # mixup (Zhang et al., ICLR 2018): each training face blended with another face of the batch, weight
    # drawn from Beta(mixup, mixup) once per batch, and the targets blended alike; 0 = off
    mixup: float = 0.0


@dataclass
class DistillConfig:
    enabled: bool = True
    weight: float = 1.0  # lambda per attention map (A-SKD used 5; why 1 with logit KD: BENCHMARKS.md)
    maps: str = "both"  # both | channel | spatial
    kd_weight: float = 1.0  # logit KD (Hinton) from the same teacher; 0 = off
    kd_temperature: float = 4.0
    # where the frozen teacher's forward runs: auto = onnxruntime on the CPU when installed (about 1.6x faster
    # than eager PyTorch there, same outputs to float rounding), torch on CUDA; onnxruntime-int8: its
    # convolutions quantised to int8 (about 1.8x faster again, outputs within about 2%); auto-int8: that on
    # the CPU, torch on CUDA
    teacher_runtime: str = "auto"
    # the teacher reads each face downsampled by this factor (1 = the HR face): a teacher assistant, e.g. a 24 px
    # student (--teacher default-24px.onnx, teacher_scale 2) teaching a 12 px one; must be below the student's scales
    teacher_scale: int = 1


@dataclass
class Config:
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------- validation
# Every value is checked here, once, when the config is built: before any store, model or file is looked
# at, with the valid values named. (Model names are checked by the registry, which owns that list.)

CHOICES = {
    "prepare.method": ("area", "bicubic", "bilinear", "nearest"),
    "prepare.label_mode": ("majority", "authors", "votes"),
    "prepare.channels": (0, 1, 3),
    "prepare.classes": (0, 7, 8),
    "optim.name": ("sgd", "adamw"),
    "optim.schedule": ("onecycle", "cosine", "step", "constant"),
    "optim.scale_lr": ("auto", "linear", "sqrt", "none"),
    "train.lowres": ("online", "prepared"),
    "distill.maps": ("both", "channel", "spatial"),
    "distill.teacher_runtime": ("auto", "auto-int8", "torch", "onnxruntime", "onnxruntime-int8"),
}
INF = float("inf")
# key: (low, high, low included, high included); list values are checked element by element
RANGES = {
    "prepare.scales": (2, 32, True, True),
    "prepare.jpeg_quality": (0, 100, True, True),
    "prepare.blur_sigma": (0, INF, True, False),
    "prepare.noise_std": (0, INF, True, False),
    "prepare.margin": (0, INF, True, False),
    "prepare.val_ratio": (0, 1, True, False),
    "prepare.test_ratio": (0, 1, True, False),
    "optim.lr": (0, INF, False, False),
    "optim.weight_decay": (0, INF, True, False),
    "optim.momentum": (0, 1, True, False),
    "optim.warmup_epochs": (0, INF, True, False),
    "optim.pct_start": (0, 1, False, False),
    "optim.base_batch": (1, INF, True, False),
    "optim.step_epochs": (1, INF, True, False),
    "optim.grad_clip": (0, INF, True, False),
    "train.epochs": (1, INF, True, False),
    "train.teacher_epochs": (0, INF, True, False),
    "train.batch_size": (1, INF, True, False),
    "train.label_smoothing": (0, 1, True, False),
    "train.majority_mix": (0, 1, True, True),
    "train.logit_adjust": (0, INF, True, False),
    "train.drw": (0, 1, True, False),
    "train.ema": (0, 1, True, False),
    "train.holdout": (0, 1, True, False),
    "train.threads": (0, INF, True, False),
    "augment.shift": (0, INF, True, False),
    "augment.scale": (0, 1, True, False),
    "augment.rotate": (0, 180, True, True),
    "augment.erase": (0, 1, True, True),
    "augment.brightness": (0, 1, True, True),
    "augment.contrast": (0, 1, True, False),
    "augment.gamma": (0, INF, True, False),
    "augment.blur": (0, 1, True, True),
    "augment.noise": (0, 255, True, True),
    "augment.mixup": (0, INF, True, False),
    "distill.weight": (0, INF, True, False),
    "distill.kd_weight": (0, INF, True, False),
    "distill.kd_temperature": (0, INF, False, False),
    "distill.teacher_scale": (1, INF, True, False),
}
FLAGS = {
    "train.epochs": "--epochs",
    "train.batch_size": "--batch-size",
    "optim.lr": "--lr",
    "prepare.scales": "--scale",
    "prepare.method": "--method",
    "prepare.jpeg_quality": "--jpeg",
    "prepare.blur_sigma": "--blur",
    "prepare.noise_std": "--noise",
    "prepare.label_mode": "--label-mode",
    "prepare.channels": "--channels",
    "prepare.classes": "--classes",
    "train.device": "--device",
    "prepare.hr_size": "--hr-size",
}
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"


def _named(key: str) -> str:
    return f"{FLAGS[key]} ({key})" if key in FLAGS else key


def parse_device(spec: str | None, what: str = "--device") -> str:
    """`auto`, `cpu`, `cuda` or `cuda:N`, normalised; anything else is a usage error. No torch here:
    runtime.select_device turns it into a device, predict's ONNX path only needs to know it is valid."""
    import re

    spec = (spec or "auto").strip().lower()
    if not re.fullmatch(DEVICE_PATTERN, spec):
        raise UsageError(f"{what} must be auto, cpu, cuda or cuda:N, got '{spec}'")
    return spec


def _bound(low, high, low_in: bool, high_in: bool) -> str:
    if high == INF:
        return f"at least {low}" if low_in else f"greater than {low}"
    return f"in {'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"


def validate(cfg: Config) -> Config:
    """Check every value of `cfg`; the first bad one is a UsageError naming the valid values."""
    for key, choices in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"{_named(key)} must be one of {', '.join(map(str, choices))}; got '{value}'.{hint}")
    for key, (low, high, low_in, high_in) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        for v in value if isinstance(value, list) else [value]:
            ok = (v >= low if low_in else v > low) and (v <= high if high_in else v < high) and v == v  # NaN fails
            if not ok:
                raise UsageError(f"{_named(key)} must be {_bound(low, high, low_in, high_in)}, got {v}")
    if not cfg.prepare.scales:
        raise UsageError("give at least one --scale (e.g. --scale 4 or --scale 2,4,8)")
    if cfg.prepare.hr_size and not 8 <= cfg.prepare.hr_size <= 512:
        raise UsageError(
            f"{_named('prepare.hr_size')} must be 0 (the source's size) or in [8, 512], got {cfg.prepare.hr_size}"
        )
    if cfg.prepare.val_ratio + cfg.prepare.test_ratio >= 1:
        raise UsageError("prepare.val_ratio + prepare.test_ratio must be less than 1")
    if cfg.train.majority_mix and not cfg.train.soft_labels:
        raise UsageError("train.majority_mix mixes the vote targets with the majority labels: it needs "
                         "train.soft_labels=true (with false, every target is the majority label already)")
    parse_device(cfg.train.device)
    return cfg


def _valid_keys(obj) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def _unknown(key: str, where: str, valid: list[str]) -> UsageError:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean '{where}{close[0]}'?" if close else ""
    return UsageError(f"unknown config key '{where}{key}'.{hint} Valid keys: {', '.join(valid)}")


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check/convert one value against a dataclass field type (str, int, float, bool, list[int], dict)."""
    origin = typing.get_origin(tp)
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [v for v in str(value).split(",") if v.strip()]
        if not isinstance(value, list):
            raise UsageError(f"config key '{name}' expects a list, got {value!r}")
        return [_coerce(v, inner, name) for v in value]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise UsageError(f"config key '{name}' expects a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise UsageError(f"config key '{name}' expects true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise UsageError(f"config key '{name}' expects an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise UsageError(f"config key '{name}' expects an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise UsageError(f"config key '{name}' expects a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UsageError(f"config key '{name}' expects a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise UsageError(f"config key '{name}' expects a string, got {value!r}")
        return str(value)
    return value


def merge(cfg: Config, data: dict, source: str = "config") -> Config:
    """Apply a nested dict onto `cfg` in place; unknown sections/keys are UsageErrors."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a mapping of sections ({', '.join(_valid_keys(cfg))})")
    hints = typing.get_type_hints(Config)
    for section, values in data.items():
        if section not in hints:
            raise _unknown(str(section), "", _valid_keys(cfg))
        sub = getattr(cfg, section)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise UsageError(f"{source}: section '{section}' must be a mapping of keys")
        sub_hints = typing.get_type_hints(type(sub))
        for key, value in values.items():
            if key not in sub_hints:
                raise _unknown(str(key), f"{section}.", _valid_keys(sub))
            setattr(sub, key, _coerce(value, sub_hints[key], f"{section}.{key}"))
    return cfg


def parse_set(items: list[str]) -> dict:
    """`["train.epochs=3", "model.kwargs.global_branch=false"]` -> nested dict (values read as YAML scalars)."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--set expects section.key=value, got '{item}'")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise UsageError(f"--set expects section.key=value, got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    # model.kwargs.X=Y keeps its sub-key: kwargs is a free-form dict validated by the model constructor.
    return out


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    return data or {}


def presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("gmenet_cli.configs").iterdir() if p.name.endswith(".yaml"))


def build_config(
    preset: str | None = None,
    config_file: str | None = None,
    sets: list[str] | None = None,
    flags: dict | None = None,
) -> Config:
    """Resolve the config for one command invocation (see module docstring for precedence)."""
    cfg = Config()
    if preset:
        if preset not in presets():
            close = difflib.get_close_matches(preset, presets(), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"unknown preset '{preset}'.{hint} Valid presets: {', '.join(presets())}")
        text = resources.files("gmenet_cli.configs").joinpath(f"{preset}.yaml").read_text(encoding="utf-8")
        merge(cfg, yaml.safe_load(text) or {}, f"preset {preset}")
    if config_file:
        merge(cfg, load_yaml(config_file), str(config_file))
    if sets:
        merge(cfg, parse_set(sets), "--set")
    if flags:
        nested: dict = {}
        for dotted, value in flags.items():
            if value is None:
                continue
            section, key = dotted.split(".", 1)
            nested.setdefault(section, {})[key] = value
        merge(cfg, nested, "command line")
    return validate(cfg)


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config saved in a checkpoint (keys unknown to this version are ignored, not fatal)."""
    cfg = Config()
    known = {k: v for k, v in (data or {}).items() if k in _valid_keys(cfg) and isinstance(v, dict)}
    for section, values in known.items():
        sub = getattr(cfg, section)
        keep = {k: v for k, v in values.items() if k in _valid_keys(sub)}
        merge(cfg, {section: keep}, "checkpoint")
    return cfg
