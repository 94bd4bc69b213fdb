"""The command line itself: help, version, start-up cost, config system, typos."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gmenet_cli import __version__
from gmenet_cli.config import build_config, parse_set
from gmenet_cli.errors import UsageError


def test_help_lists_every_command_and_imports_no_torch():
    code = ("import sys; from gmenet_cli.cli import app; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(app, ['--help']); print(r.output); "
            "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout
    for cmd in ("prepare", "distill-teacher", "train", "evaluate", "predict", "export", "models"):
        assert cmd in out
    assert "NO_TORCH" in out


def test_version(cli):
    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"gmenet {__version__}"


@pytest.mark.parametrize("cmd", ["prepare", "datasets", "distill-teacher", "train", "evaluate", "calibrate", "predict",
                                 "export", "models"])
def test_every_command_has_actionable_help(cli, cmd):
    """Every command's help ends its description with a runnable example of that command."""
    res = cli(cmd, "--help")
    assert res.exit_code == 0
    flat = " ".join(res.stdout.replace("│", " ").split())  # Rich wraps and boxes the text
    assert "Example: " in flat and f"gmenet {cmd} " in flat.split("Example: ", 1)[1], flat


def test_option_typo_names_the_valid_option(cli):
    res = cli("train", "--epoch", "3")
    assert res.exit_code == 2
    assert "--epochs" in res.output


def test_preset_help_names_every_shipped_preset_and_quick_only_shortens_the_defaults():
    from gmenet_cli.cli import PresetOpt
    from gmenet_cli.config import Config, presets

    listed = re.sub(r"\([^)]*\)", "", PresetOpt.help.split(":", 1)[1]).rstrip(". ")
    named = {name.strip() for name in listed.split(",")}
    assert named == set(presets())
    quick, default = build_config(preset="quick"), Config()
    assert (quick.train.epochs, quick.train.teacher_epochs) == (3, 2)
    quick.train.epochs, quick.train.teacher_epochs = default.train.epochs, default.train.teacher_epochs
    assert quick == default  # the shipped architectures and recipe, nothing else changed


def test_config_precedence_and_validation(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 7\n  batch_size: 32\nmodel:\n  kwargs: {global_branch: false}\n")
    cfg = build_config(preset="ferplus", config_file=str(f), sets=["train.epochs=9"], flags={"train.batch_size": 64})
    assert cfg.train.epochs == 9 and cfg.train.batch_size == 64 and cfg.model.kwargs == {"global_branch": False}
    assert cfg.prepare.scales == [2, 4, 8]  # from the preset
    assert parse_set(["train.scales=2,4"]) == {"train": {"scales": "2,4"}}
    assert build_config(sets=["train.scales=2,4"]).train.scales == [2, 4]
    with pytest.raises(UsageError, match="Did you mean 'train.epochs'.*Valid keys"):
        build_config(sets=["train.epoch=3"])
    with pytest.raises(UsageError, match="unknown config key 'trian'"):
        build_config(sets=["trian.epochs=3"])
    with pytest.raises(UsageError, match="expects true/false"):
        build_config(sets=["train.flip=maybe"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        build_config(config_file=str(bad))
    evil = tmp_path / "evil.yaml"
    evil.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        build_config(config_file=str(evil))  # safe_load refuses python tags


def test_models_table(cli):
    res = cli("models", "--json")
    assert res.exit_code == 0
    import json

    rows = [json.loads(line) for line in res.stdout.splitlines()]
    names = {r["name"] for r in rows}
    assert {"teacher_s", "gmenet_s", "gmenet_m"} <= names
    assert all(r["params"] > 0 and r["gflops"] > 0 for r in rows)


@pytest.mark.parametrize("command", ["train", "distill-teacher"])
@pytest.mark.parametrize("setting, message", [
    ("optim.schedule=cosin", "optim.schedule must be one of onecycle, cosine, step, constant; got 'cosin'. Did you "
                             "mean 'cosine'?"),
    ("augment.blur=2", "augment.blur must be in [0, 1], got 2.0"),
    ("distill.maps=all", "distill.maps must be one of both, channel, spatial"),
    ("train.device=gpu", "--device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    ("train.majority_mix=0.5", "train.majority_mix mixes the vote targets with the majority labels: it needs "
                               "train.soft_labels=true"),
])
def test_a_bad_config_value_is_refused_before_any_store_is_looked_for(command, setting, message, cli, workdir):
    """No store exists here: the value's own error must come first (exit 2), naming the valid values."""
    res = cli(command, "--set", setting, "-q")
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert "store" not in res.stderr


def test_a_misspelt_preset_gets_a_suggestion(cli, workdir):
    res = cli("train", "--preset", "quik", "-q")
    assert res.exit_code == 2 and "Did you mean 'quick'?" in res.stderr


@pytest.mark.parametrize("cmd", ["prepare", "distill-teacher", "train", "evaluate", "calibrate", "predict", "export"])
def test_help_fits_an_80_column_terminal(cmd):
    """Nothing cut off with an ellipsis, the description reflowed (no ragged half-lines), the list of sources
    under prepare's options kept in its column."""
    from typer.testing import CliRunner

    from gmenet_cli.cli import app

    res = CliRunner().invoke(app, [cmd, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert res.exit_code == 0 and "…" not in res.stdout
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    if cmd == "prepare":
        sources = lines[next(i for i, line in enumerate(lines) if "Sources and the files" in line) + 1:]
        assert all(not line.strip() or line.startswith("   ") for line in sources), sources
