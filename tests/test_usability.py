"""What a new user trips over (issue 16) and where datasets are found (issue 17): printed next commands that
run, small data, wrong files, output contracts, exit codes, help text, run estimates, interrupts."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import sys
from pathlib import Path

import pytest
import synth
from conftest import ASTRONAUT, REPO, json_lines

COMMANDS = ("prepare", "datasets", "distill-teacher", "train", "evaluate", "predict", "export", "models")


def _next(stderr: str) -> list[str]:
    """The printed `Next: gmenet ...` command, as argv (without 'gmenet')."""
    line = [ln for ln in stderr.splitlines() if ln.startswith("Next: gmenet ")][-1]
    return shlex.split(line[len("Next: gmenet "):])


def test_printed_next_commands_run_as_printed(tiny_store, cli, workdir):
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "-b", "16", "--epochs", "1", "-q")
    assert res.exit_code == 0, res.output
    argv = _next(res.stderr)
    assert argv[0] == "train" and "--preset" in argv and "tiny" in argv and "--batch-size" in argv
    res = cli(*argv, "--epochs", "1", "-q")  # the printed train command, as printed
    assert res.exit_code == 0, res.output
    argv = _next(res.stderr)
    assert argv[0] == "evaluate"
    res = cli(*argv)
    assert res.exit_code == 0, res.output
    argv = _next(res.stderr)
    assert argv[:2] == ["predict", "photo.jpg"]
    best = Path(argv[argv.index("--weights") + 1])
    res = cli("export", "--weights", best)
    assert res.exit_code == 0, res.output
    assert (best.with_suffix(".onnx")).is_file()  # best.pt -> best.onnx, as the README says
    argv = _next(res.stderr)
    argv[1] = str(ASTRONAUT)
    assert cli(*argv).exit_code == 0


def test_teacher_of_another_size_only_pairs_a_matching_student(tiny_store, cli, workdir):
    # a t2 teacher is the newest run, but `train --preset tiny` trains gmenet_t: it needs teacher_t
    res = cli(
        "distill-teacher", "--data", tiny_store, "--preset", "tiny", "--model", "teacher_t2", "--epochs", "1", "-q"
    )
    assert res.exit_code == 0, res.output
    assert "--model gmenet_t2" in res.stderr  # the printed next command pairs the student with it
    res = cli("train", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "-q")
    assert res.exit_code == 2 and "no teacher_t teacher" in res.stderr and "teacher_t2" in res.stderr
    assert cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "-q").exit_code == 0
    shutil.copystat(
        workdir / "runs/distill-teacher/exp/weights/best.pt", workdir / "runs/distill-teacher/exp2/weights/best.pt"
    )
    os.utime(workdir / "runs/distill-teacher/exp/weights/best.pt")  # the t2 teacher is the newest again
    res = cli("train", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "-q")
    assert res.exit_code == 0, res.output
    assert "most recent teacher: runs/distill-teacher/exp2" in res.stderr


def test_small_data_shrinks_the_batch_and_stores_without_val_hold_out_part_of_train(cli, workdir):
    root = synth.make_raf(workdir / "raf", per_class=3)  # RAF-DB's layout: train and test only, 21 faces each
    assert (
        cli(
            "prepare",
            "--src",
            "raf",
            "--root",
            root,
            "--scale",
            "8",
            "--hr-size",
            "48",
            "--channels",
            "1",
            "--out",
            workdir / "raf8",
        ).exit_code
        == 0
    )
    res = cli(
        "train",
        "--data",
        workdir / "raf8",
        "--no-distill",
        "--preset",
        "tiny",
        "--model",
        "plain_t2",
        "--batch-size",
        "128",
        "--epochs",
        "1",
        "-q",
    )
    assert res.exit_code == 0, res.output
    assert "larger than the 19 training faces: using 19" in res.stderr
    assert "holding out 2 of the 21 training faces" in res.stderr and "test split stays" in res.stderr


@pytest.mark.parametrize(
    "name, kind", [("results.csv", "a .csv file"), ("model.onnx", "an ONNX model"), ("face.png", "a .png file")]
)
def test_wrong_kind_of_file_as_a_checkpoint(tiny_store, cli, workdir, name, kind):
    path = workdir / name
    # another tool's ONNX model (a gmenet export carries its checkpoint and loads: test_evaluate_predict.py)
    shutil.copy(ASTRONAUT if name.endswith(".png") else REPO / "gmenet_cli/weights/yunet.onnx", path)
    if name.endswith(".csv"):
        path.write_text("epoch,loss\n1,0.5\n")
    cmds = [["export", "--weights", path], ["train", "--teacher", path, "--data", tiny_store, "--preset", "tiny"]]
    if not name.endswith(".onnx"):  # evaluate reads ONNX models through onnxruntime (its own message)
        cmds.insert(0, ["evaluate", "--weights", path, "--data", tiny_store])
    for cmd in cmds:
        res = cli(*cmd)
        assert res.exit_code == 2, (cmd, res.output)
        assert f"is not a gmenet checkpoint but {kind}" in res.stderr and "Traceback" not in res.output
        assert "pass a best.pt from gmenet train" in res.stderr
        assert "internal error" not in res.stderr


def test_output_contracts_account_for_every_input(tiny_runs, cli, workdir):
    blank, broken = workdir / "blank.png", workdir / "broken.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(blank), np.full((120, 160, 3), 128, np.uint8))
    broken.write_bytes(ASTRONAUT.read_bytes()[:3000])  # a truncated PNG
    inputs = f"{ASTRONAUT}\n{blank}\n{broken}\n"
    res = cli("predict", "-", "--weights", tiny_runs["student"], "--json", "--summary", input=inputs)
    assert res.exit_code == 1
    records = json_lines(res.stdout)
    assert [r["file"] for r in records] == [str(ASTRONAUT), str(blank), str(broken)]
    assert "label" in records[0] and records[1]["faces"] == 0 and "error" in records[2]
    plain = cli("predict", "-", "--weights", tiny_runs["student"], "--json", input=inputs)
    assert plain.exit_code == 1 and [r["file"] for r in json_lines(plain.stdout, summaries=True)] == [str(ASTRONAUT)]
    assert str(blank) in plain.stderr and str(broken) in plain.stderr  # reported where messages go
    res = cli("predict", ASTRONAUT, "--weights", tiny_runs["student"], "--summary")
    assert res.exit_code == 2 and "--summary" in res.stderr and "--json" in res.stderr
    assert "WARN" not in res.stderr  # OpenCV's own log lines stay off stderr
    res = cli("predict", "-", "--weights", tiny_runs["student"], "--csv", input=inputs)
    rows = [line.split(",") for line in res.stdout.strip().splitlines()]
    assert rows[0][-1] == "note" and all(len(r) >= len(rows[0]) for r in rows[1:])
    assert rows[1][-1] == "" and "no face" in rows[2][-1] and rows[3][-1]
    # one exit code per kind of problem, the same in every command: a missing file is a usage error
    assert cli("predict", ASTRONAUT, "--weights", workdir / "missing.pt").exit_code == 2
    assert cli("evaluate", "--weights", workdir / "missing.pt").exit_code == 2
    assert cli("train", "--data", workdir / "missing", "-q").exit_code == 2


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_shows_no_python_types_for_flags(cli, cmd):
    res = cli(cmd, "--help")
    assert res.exit_code == 0
    assert "<bool>" not in res.stdout and "list[str]>" not in res.stdout.split("Options")[-1]
    assert "range>" not in res.stdout  # bounded numbers show a name (N, PX) and their bounds, not "<int range>"


def test_usage_line_names_and_option_aliases(cli, workdir):
    assert "Usage: gmenet predict [OPTIONS] INPUTS..." in " ".join(cli("predict", "--help").stdout.split())
    root = synth.make_ferplus(workdir / "fp", per_class=1)
    res = cli("prepare", "--src", "FERPlus", "--root", root, "--scales", "4", "--out", workdir / "s")
    assert res.exit_code == 0, res.output  # the source's own capitalisation and --scales, as train/evaluate take
    assert cli("prepare", "--src", "ferplu", "--root", root).stderr.count("Did you mean 'ferplus'") == 1


def test_training_prints_an_estimate_and_an_interrupt_before_the_first_epoch_leaves_nothing(
    tiny_store, cli, workdir, monkeypatch
):
    from gmenet_cli.training import loop

    res = cli("train", "--data", tiny_store, "--no-distill", "--preset", "tiny", "--epochs", "1", "-b", "4")
    assert res.exit_code == 0, res.output
    assert re.search(r"estimate: \d+ s of training per epoch, 1 epoch to go: about \d+ s plus validation", res.stderr)
    real = loop.train_step

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train_step", stop)
    res = cli("train", "--data", tiny_store, "--no-distill", "--preset", "tiny", "-q")
    assert res.exit_code == 130 and "no epoch completed yet" in res.stderr
    assert not (workdir / "runs/train/exp2").exists()  # not a folder holding only config.yaml
    monkeypatch.setattr(loop, "train_step", real)
    assert cli("train", "--data", tiny_store, "--no-distill", "--preset", "tiny", "--epochs", "1", "-q").exit_code == 0
    assert (workdir / "runs/train/exp2/weights/best.pt").is_file()


@pytest.mark.skipif(sys.platform != "linux", reason="fork")
def test_a_prepare_worker_that_dies_stops_the_run(tmp_path, monkeypatch):
    from gmenet_cli.config import PrepareConfig
    from gmenet_cli.data import prepare as prep
    from gmenet_cli.errors import DataError

    root = synth.make_ferplus(tmp_path / "fp", per_class=40)
    parent = os.getpid()
    real = prep.FaceJob.__call__

    def killed(self, rec):
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would
        return real(self, rec)

    monkeypatch.setattr(prep.FaceJob, "__call__", killed)
    with pytest.raises(DataError, match="worker process died"):
        prep.prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]), workers=2)
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s.tmp-*"))


# ---------------------------------------------------------------------------------------------- issue 17


def test_dataset_root_look_up_order(cli, workdir, monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("GMENET_CONFIG_DIR", str(home))
    monkeypatch.delenv("GMENET_DATASETS", raising=False)
    res = cli("prepare", "--src", "ferplus", "--scale", "4")
    assert res.exit_code == 2
    assert "datasets/ferplus (./datasets)" in res.stderr and "FER2013Train" in res.stderr
    # 4. the settings file's datasets_dir
    settings_dir = tmp_path_factory.mktemp("settings_data")
    synth.make_ferplus(settings_dir / "ferplus", per_class=1)
    (home / "settings.yaml").write_text(f"datasets_dir: {settings_dir}\n")
    res = cli("prepare", "--src", "ferplus", "--scale", "4", "--out", workdir / "a")
    assert res.exit_code == 0 and f"{settings_dir / 'ferplus'}" in res.stderr
    # 3. $GMENET_DATASETS before the settings file
    env_dir = tmp_path_factory.mktemp("env_data")
    synth.make_ferplus(env_dir / "ferplus", per_class=1)
    monkeypatch.setenv("GMENET_DATASETS", str(env_dir))
    res = cli("prepare", "--src", "ferplus", "--scale", "4", "--out", workdir / "b")
    assert res.exit_code == 0 and f"{env_dir / 'ferplus'}" in res.stderr
    # 2. ./datasets/<src> before both
    synth.make_ferplus(workdir / "datasets" / "ferplus", per_class=1)
    res = cli("prepare", "--src", "ferplus", "--scale", "4", "--out", workdir / "c")
    assert res.exit_code == 0 and "using the ferplus dataset in datasets/ferplus" in res.stderr
    # 1. --root wins
    other = synth.make_ferplus(workdir / "other", per_class=1)
    res = cli("prepare", "--src", "ferplus", "--root", other, "--scale", "4", "--out", workdir / "d")
    assert res.exit_code == 0 and "using the ferplus dataset" not in res.stderr
    # a place without the layout is passed over, and named in the message when nothing is found
    res = cli("prepare", "--src", "raf", "--scale", "8")
    assert res.exit_code == 2
    for place in ("datasets/raf", str(env_dir / "raf"), str(settings_dir / "raf"), "EmoLabel/list_patition_label.txt"):
        assert place in res.stderr
    (home / "settings.yaml").write_text("dataset_dir: /x\n")
    res = cli("prepare", "--src", "raf", "--scale", "8")
    assert res.exit_code == 2 and "Valid keys: datasets_dir" in res.stderr


def test_datasets_lists_every_source_and_where_it_looked(cli, workdir, monkeypatch, tmp_path_factory):
    monkeypatch.setenv("GMENET_CONFIG_DIR", str(tmp_path_factory.mktemp("home")))
    monkeypatch.delenv("GMENET_DATASETS", raising=False)
    synth.make_ferplus(workdir / "datasets" / "ferplus", per_class=1)
    res = cli("datasets", "--json")
    assert res.exit_code == 0
    rows = {r["source"]: r for r in json_lines(res.stdout)}
    assert set(rows) == {"ferplus", "fer2013", "raf", "expw", "affectnet", "folder"}
    assert rows["ferplus"]["found"] == "datasets/ferplus" and rows["raf"]["found"] is None
    assert rows["raf"]["looks_in"] == ["datasets/raf"]
    listed = cli("prepare", "--list-sources")
    assert listed.exit_code == 0 and "ferplus" in listed.stdout and "datasets/ferplus" in listed.stdout


def test_readme_commands_use_only_options_that_exist(cli):
    """Every `gmenet <command> --option` in the README's code blocks is an option of that command."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    helps: dict[str, str] = {}
    checked = 0
    for line in (ln for b in blocks for ln in b.splitlines()):
        for cmd_text in re.findall(r"gmenet ([a-z-]+)((?: [^|&;#]*)?)", line):
            cmd, rest = cmd_text
            if cmd not in COMMANDS:
                continue
            helps.setdefault(cmd, " ".join(cli(cmd, "--help").stdout.split()))
            for opt in re.findall(r"(?<!\S)(--[a-z][a-z-]*)", rest):
                assert opt in helps[cmd], f"README: gmenet {cmd} {opt} is not an option of {cmd}"
                checked += 1
    assert checked >= 10


def test_a_reader_that_goes_away_stops_predict_quietly(tmp_path):
    """`gmenet predict ... --json | head -1`: once the reader closes the pipe, no 'Broken pipe' error."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "gmenet_cli", "predict", str(ASTRONAUT), str(ASTRONAUT), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    proc.stdout.close()  # before the first line is written: every write meets a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "pipe" not in stderr.lower() and "Traceback" not in stderr, stderr


def test_the_time_estimate_leaves_out_the_slow_first_batches(monkeypatch, capsys):
    """One-time costs in the first batches (page-in, kernel set-up) must not inflate the printed estimate."""
    import time

    from gmenet_cli import render

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    lines = []
    monkeypatch.setattr(render.err, "print", lambda *a, **k: lines.append(str(a[0])))
    r = render.RichTraining(quiet=True)
    r.epoch_start(0, 2, 100)
    for i in range(100):
        clock[0] += 5.0 if i < 10 else 0.1  # the first 10 batches are 50x slower
        if (i + 1) % 10 == 0:
            r.batch(i, {"loss": 1.0, "acc": 0.5})
    (line,) = [x for x in lines if "to go" in x]
    # 170 batches left at 0.1 s: about 17 s; timing from the start would have said about 6 min
    assert re.search(r"estimate: 10 s of training per epoch, 2 epochs to go: about 1\d s plus validation", line), line
    # the first epoch's validation (30 s) measured: the estimate is given again with it, 10 + 30 s for the last epoch
    r.epoch_end({"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "epoch_time_s": 19.0, "images_per_s": 1.0,
                 "val_time_s": 30.0})
    assert any("estimate with validation (30 s each): about 40 s to go" in x for x in lines), lines


@pytest.mark.parametrize("seconds,text", [(89, "89 s"), (95, "2 min"), (5399, "90 min"), (5400, "1 h 30 min"),
                                          (7170, "2 h 0 min"), (7229, "2 h 0 min"), (7290, "2 h 2 min")])
def test_durations_read_as_a_person_would_write_them(seconds, text):
    from gmenet_cli.render import _duration

    assert _duration(seconds) == text


def test_training_off_a_terminal_prints_progress_now_and_then(monkeypatch):
    """Piped or logged, there is no bar: a plain line every minute (none with --quiet)."""
    import time

    from gmenet_cli import render

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    for quiet, expected in ((False, 3), (True, 0)):
        lines = []
        monkeypatch.setattr(render.err, "print", lambda *a, **k: lines.append(str(a[0])))
        r = render.RichTraining(quiet=quiet)
        assert r.bar.disable  # pytest's stderr is not a terminal
        r.epoch_start(0, 1, 400)
        for i in range(0, 400, 10):
            clock[0] += 5.0  # 200 s for the epoch
            r.batch(i + 9, {"loss": 1.0, "acc": 0.5})
        progress = [x for x in lines if x.startswith("  epoch 1/1: batch ")]
        assert len(progress) == expected, lines


def test_one_exit_code_rule_across_commands(tiny_runs, tiny_store, cli, workdir):
    """2: the command line is wrong (a path that does not exist, a file that is not what the option takes);
    1: the right kind of thing, but damaged or not fitting; the other inputs of predict are still reported."""
    good = workdir / "good.png"
    shutil.copy(ASTRONAUT, good)
    res = cli("predict", workdir / "nothere.jpg")
    assert res.exit_code == 2 and "nothere.jpg" in res.stderr
    res = cli("predict", good, workdir / "nothere.jpg", "--json", "--summary", "--weights", tiny_runs["student"])
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert res.exit_code == 2 and [("label" in r, "error" in r) for r in records if "summary" not in r] == [
        (True, False), (False, True)]
    fake_onnx, fake_pt = workdir / "fake.onnx", workdir / "fake.pt"
    fake_onnx.write_bytes(b"not a model at all")
    fake_pt.write_bytes(b"not a model at all")
    for weights in (fake_onnx, fake_pt):
        res = cli("predict", good, "--weights", weights)
        assert res.exit_code == 2, (weights, res.output)
    assert "neither a PyTorch zip archive nor a pickle" in res.stderr and "evaluate, export" not in res.stderr
    empty = workdir / "emptyds"
    empty.mkdir()
    res = cli("prepare", "--src", "ferplus", "--root", empty, "--scale", "4")
    assert res.exit_code == 2 and "none found" in res.stderr
    truncated = workdir / "truncated.pt"
    truncated.write_bytes(tiny_runs["student"].read_bytes()[:5000])
    res = cli("evaluate", "--weights", truncated, "--data", tiny_store)
    assert res.exit_code == 1 and "corrupt or truncated" in res.stderr


def test_predict_names_torchscript_exports_for_what_they_are(tiny_runs, cli, workdir):
    student = workdir / "s.pt"
    shutil.copy(tiny_runs["student"], student)
    assert cli("export", "--weights", student, "--format", "torchscript").exit_code == 0
    res = cli("predict", ASTRONAUT, "--weights", workdir / "s.torchscript.pt")
    assert res.exit_code == 2 and "is a TorchScript export, which gmenet does not read back" in res.stderr
    assert "UserWarning" not in res.output and "corrupt" not in res.stderr


def test_small_confusions_are_gone(tiny_runs, tiny_store, cli, workdir):
    """prepare's next step is the quick first try; evaluate, calibrate and export share how --weights is
    found (`default`, or the newest run, said to be unfinished when it is); export says what it replaced;
    models names the size each model works at; evaluate names the shipped model 'default'."""
    import synth

    root = synth.make_ferplus(workdir / "ferplus", per_class=2)
    res = cli("prepare", "--src", "ferplus", "--root", root, "--scale", "4", "--out", workdir / "st")
    nxt = [line for line in res.stderr.splitlines() if line.startswith("Next:")]
    assert nxt == [f"Next: gmenet distill-teacher --preset quick --data {workdir / 'st'}"]
    assert "--preset ferplus is the full recipe" in res.stderr and "no test split" in res.stderr
    res = cli("evaluate", "--weights", "default", "--data", tiny_store, "--json", "--out", workdir / "ev0")
    assert res.exit_code == 0 and json.loads(res.stdout)["models"][0]["label"] == "gmenet_s2 (default)"
    res = cli("evaluate", "--weights", "default")  # the shipped model names no store, and none is under prepared/
    assert res.exit_code == 2 and "run gmenet prepare" in res.stderr and "--data PREPARED" in res.stderr
    shutil.copytree(tiny_store, workdir / "prepared" / "tiny")
    res = cli("evaluate", "--weights", "default", "--json", "--out", workdir / "ev1")  # the newest store here
    assert res.exit_code == 0 and f"using the most recent prepared store: {Path('prepared', 'tiny')}" in res.stderr
    shutil.rmtree(workdir / "prepared")
    assert cli("calibrate", "--weights", "default").exit_code == 2
    run = workdir / "runs" / "train" / "mine" / "weights"
    run.mkdir(parents=True)
    shutil.copy(tiny_runs["student"], run / "best.pt")
    from gmenet_cli import checkpoint

    last = checkpoint.load(tiny_runs["student"].with_name("last.pt"))
    checkpoint.save(run / "last.pt", {**last, "finished": False, "epoch": 1})
    res = cli("export")
    assert res.exit_code == 0, res.output
    assert "exporting the most recent model: runs/train/mine/weights/best.pt (its run is unfinished: 1 of" in res.stderr
    res = cli("export", "--half-weights")
    assert res.exit_code == 0 and "replaced the earlier runs/train/mine/weights/best.onnx (" in res.stderr
    assert "float32 weights" in res.stderr
    res = cli("models", "--json")
    rows = {r["name"]: r for r in map(json.loads, res.stdout.splitlines())}
    assert rows["gmenet_s2"]["working_px"] == 24 and rows["gmenet_s2"]["input_px"] == 12
    assert rows["teacher_s2"]["working_px"] == 48
    res = cli("evaluate", "--weights", run / "best.pt", "--data", tiny_store, "--json", "--out", workdir / "ev")
    assert json.loads(res.stdout)["models"][0]["label"].endswith("(mine)")
    from gmenet_cli.evaluate import run_name

    assert run_name(REPO / "gmenet_cli/weights/default.onnx") == "default"


def test_evaluate_warns_when_a_model_gives_every_face_one_class(tiny_runs, tiny_store, cli, workdir):
    import torch

    from gmenet_cli import checkpoint

    ckpt = checkpoint.load(tiny_runs["student"])
    state = dict(ckpt["state_dict"])
    state["head.weight"] = torch.zeros_like(state["head.weight"])
    state["head.bias"] = torch.arange(len(ckpt["classes"]), dtype=state["head.bias"].dtype)  # the last class wins
    checkpoint.save(workdir / "collapsed.pt", {**ckpt, "state_dict": state})
    res = cli("evaluate", "--weights", workdir / "collapsed.pt", "--data", tiny_store, "--out", workdir / "ev")
    assert res.exit_code == 0 and "predicts 'contempt' for every face at 24px" in res.stderr
    assert "predicts 'contempt' for every face at 12px" in res.stderr  # every size it reports


def test_a_tiny_crop_without_a_face_points_at_no_detect_and_streams_keep_ffmpeg_quiet(tiny_runs, cli, workdir):
    import subprocess

    import cv2

    crop = workdir / "crop12.png"
    face = cv2.imread(str(ASTRONAUT))[40:200, 150:310]
    cv2.imwrite(str(crop), cv2.resize(face, (12, 12), interpolation=cv2.INTER_AREA))
    res = cli("predict", crop, "--weights", tiny_runs["student"])
    assert res.exit_code == 1
    assert "no face found in this 12x12 image; if it is a face crop, pass --no-detect" in res.stderr
    proc = subprocess.run([sys.executable, "-m", "gmenet_cli", "predict", "rtsp://127.0.0.1:9/none", "--no-detect"],
                          capture_output=True, text=True, timeout=60, cwd=workdir)
    assert proc.returncode == 1 and "cannot open stream (refused, unreachable" in proc.stderr, proc.stderr
    assert "[tcp @" not in proc.stderr and "Connection" not in proc.stderr, proc.stderr  # FFmpeg's log stays off
