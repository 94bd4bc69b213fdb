"""Model registry: every model is built by name, so checkpoints can rebuild it from plain data.

`create_model("gmenet_s", in_chans=1, num_classes=8, input_size=48, global_branch=False)`.
Teachers and students of the same size name (t, s, m; t2, s2, m2) share the attention layout, so their
maps pair. The "2" family is VGG-style (two 3x3 convs per stage, five stages) and its students work at
half the teacher's input size (`working_scale` 2: 24 px for 48 px faces), where an LR face of 12 px or
less loses nothing and a step costs a quarter; the teacher's spatial maps are pooled to pair.
"""

from __future__ import annotations

from dataclasses import dataclass

from gmenet_cli.errors import UsageError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # teacher | student
    builder: str  # "teacher" | "gmenet"
    defaults: dict
    about: str
    working_scale: int = 1  # the model works at the data's HR size / this (students of the "2" family: 2)


_SIZES = {
    # letter: (widths, depths, global width) -- t: tests and smoke runs; s: laptop CPU; m: GPU.
    "t": ((8, 16, 32, 64), (1, 1, 1, 1), 8),
    "s": ((32, 64, 128, 256), (1, 1, 1, 1), 32),
    "m": ((64, 128, 256, 512), (2, 2, 2, 2), 64),
}
_ABOUT = {"t": "tiny, for tests", "s": "small, CPU-friendly", "m": "medium, for GPU training"}

REGISTRY: dict[str, ModelSpec] = {}
for _letter, (_w, _d, _g) in _SIZES.items():
    REGISTRY[f"teacher_{_letter}"] = ModelSpec(
        f"teacher_{_letter}", "teacher", "teacher", {"widths": _w, "depths": _d},
        f"HR teacher, CBAM attention ResNet ({_ABOUT[_letter]})",
    )
    REGISTRY[f"gmenet_{_letter}"] = ModelSpec(
        f"gmenet_{_letter}", "student", "gmenet", {"widths": _w, "depths": _d, "global_width": _g},
        f"GME-Net student, pairs with teacher_{_letter} ({_ABOUT[_letter]})",
    )


_VGG = {
    # name: (widths, global width)
    "t2": ((8, 16, 32, 32, 32), 8),
    "s2": ((32, 64, 128, 256, 256), 32),
    "m2": ((64, 128, 256, 512, 512), 64),
}
for _size, (_w, _g) in _VGG.items():
    _about = _ABOUT[_size[0]]
    REGISTRY[f"teacher_{_size}"] = ModelSpec(
        f"teacher_{_size}", "teacher", "teacher", {"layout": "vgg", "widths": _w, "dropout": 0.3},
        f"HR teacher, VGG-style stages with CBAM attention ({_about})",
    )
    REGISTRY[f"gmenet_{_size}"] = ModelSpec(
        f"gmenet_{_size}", "student", "gmenet", {"layout": "vgg", "widths": _w, "global_width": _g, "dropout": 0.3},
        f"GME-Net student at half the HR size, pairs with teacher_{_size} ({_about})", working_scale=2,
    )
    REGISTRY[f"plain_{_size}"] = ModelSpec(
        f"plain_{_size}", "student", "gmenet",
        {"layout": "vgg", "widths": _w, "attention": False, "global_branch": False, "dropout": 0.3},
        f"plain CNN baseline (ablation row 0): gmenet_{_size} without attention or global branch", working_scale=2,
    )


def working_size(name: str, hr_size: int) -> int:
    """The size a registered model works at for data of `hr_size` px faces."""
    return max(1, hr_size // get_spec(name).working_scale)


def list_models() -> list[str]:
    return sorted(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list_models(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UsageError(f"unknown model '{name}'.{hint} Valid models: {', '.join(list_models())}")
    return REGISTRY[name]


def create_model(name: str, **kwargs):
    """Build a registered model; kwargs override its defaults (unknown kwargs are a UsageError)."""
    import inspect

    from gmenet_cli.models.gmenet import GMENet
    from gmenet_cli.models.teacher import AttentionResNet

    spec = get_spec(name)
    cls = AttentionResNet if spec.builder == "teacher" else GMENet
    params = set(inspect.signature(cls.__init__).parameters) | {"upsample", "mean", "std"}
    params.discard("self")
    params.discard("base")
    unknown = sorted(set(kwargs) - params)
    if unknown:
        raise UsageError(f"model '{name}' has no option {', '.join(unknown)}. Valid options: "
                         f"{', '.join(sorted(params))}")
    merged = {**spec.defaults, **kwargs}
    try:
        return cls(**merged)
    except (ValueError, TypeError) as e:
        raise UsageError(f"model '{name}': {e}") from None


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model, in_chans: int, size: int) -> int:
    """FLOPs (multiply and add counted separately, i.e. 2 x MACs) of one forward pass at batch 1."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_chans, size, size))
    model.train(was_training)
    return int(counter.get_total_flops())
