"""distill-teacher and train end to end on a tiny synthetic store: checkpoints, resume, errors, DDP."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
from conftest import interrupt_then_resume, json_lines

from gmenet_cli import checkpoint
from gmenet_cli.data.loader import PairedBatches
from gmenet_cli.data.store import Store


def _rows(run: Path) -> list[dict]:
    with open(run / "results.csv") as f:
        return list(csv.DictReader(f))


def test_teacher_then_student_then_reload_and_predict(tiny_runs, cli, workdir):
    for key in ("teacher", "student"):
        path = tiny_runs[key]
        raw = torch.load(path, weights_only=True)  # plain data only
        assert raw["format"] == "gmenet-checkpoint"
        ck = checkpoint.load(path)
        assert ck["classes"][0] == "neutral" and len(ck["classes"]) == 8
        model = checkpoint.build_model(ck, path)
        size = ck["input"]["hr_size"] if key == "teacher" else min(int(v) for v in ck["input"]["lr_sizes"].values())
        assert model(torch.rand(2, 1, size, size)).shape == (2, 8)
    student = checkpoint.load(tiny_runs["student"])
    assert student["kind"] == "student" and student["distill"] is True
    assert student["input"]["scales"] == [2, 4] and student["input"]["lr_sizes"] == {"2": 24, "4": 12}
    assert student["teacher"]["model"] == "teacher_t"
    # on the CPU the frozen teacher's forward runs in onnxruntime when it is installed (CI installs it)
    from gmenet_cli.training.ort_teacher import available

    assert student["teacher"]["runtime"] == ("onnxruntime" if available() else "torch")
    run = tiny_runs["student"].parent.parent
    rows = _rows(run)
    assert len(rows) == 2
    for col in ("train_loss", "train_ce", "train_askd", "train_askd_channel", "train_askd_spatial", "train_acc",
                "val_acc", "val_acc_x2", "val_acc_x4", "lr", "epoch_time_s", "images_per_s"):
        assert col in rows[0]
    assert (run / "config.yaml").is_file() and (run / "results.png").is_file()
    # the student classifies a face crop through predict
    import cv2
    from synth import face

    cv2.imwrite(str(workdir / "crop.png"), face(1, 24))
    res = cli("predict", workdir / "crop.png", "--weights", tiny_runs["student"], "--no-detect", "--json")
    assert res.exit_code == 0, res.output
    (line,) = json_lines(res.stdout)
    assert line["label"] in student["classes"] and line["input_px"] == 24


def test_distillation_is_learning_on_synthetic_faces(tiny_runs):
    """Guard against a silently broken loop: after 2 epochs the teacher beats chance (1/8) on train, and the
    distilled student's attention maps move towards the teacher's (A-SKD falls) while its own accuracy rises
    above chance."""
    rows = _rows(tiny_runs["teacher"].parent.parent)
    assert float(rows[-1]["train_acc"]) > 0.2
    student = _rows(tiny_runs["student"].parent.parent)
    assert float(student[-1]["train_askd"]) < float(student[0]["train_askd"])
    assert max(float(r["train_acc"]) for r in student) > 1 / 8


def test_interrupted_run_resumes_to_the_same_epoch_count(tiny_store, cli, workdir, monkeypatch):
    from gmenet_cli.training import loop as engine

    calls = {"n": 0}
    real_validate = engine.validate

    def interrupt_second_epoch(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_validate(*a, **k)

    monkeypatch.setattr(engine, "validate", interrupt_second_epoch)
    res = cli("train", "--data", tiny_store, "--no-distill", "--preset", "tiny", "--epochs", "3", "--name", "r", "-q")
    assert res.exit_code == 130
    assert "--resume" in res.stderr
    last = checkpoint.load(workdir / "runs/train/r/weights/last.pt")
    assert last["epoch"] == 1 and not last["finished"]
    monkeypatch.setattr(engine, "validate", real_validate)
    # the run's folder after --resume, as other trainers take it, is the same as --resume --name r
    from gmenet_cli.cli import resume_path_argv

    assert resume_path_argv(["train", "--resume", "runs/train/r", "-q"]) == ["train", "--resume", "--name", "r", "-q"]
    res = cli(*resume_path_argv(["train", "--resume", str(workdir / "runs/train/r/weights/last.pt"), "-q"]))
    assert res.exit_code == 0, res.output
    assert "resuming" in res.stderr
    rows = _rows(workdir / "runs/train/r")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert checkpoint.load(workdir / "runs/train/r/weights/last.pt")["finished"]
    again = cli("train", "--name", "r", "--resume", "-q")
    assert again.exit_code == 2 and "already finished" in again.stderr


def test_resumed_run_matches_uninterrupted_run(tiny_store, cli, workdir, monkeypatch):
    """Deterministic CPU run: 3 epochs straight == interrupted in epoch 2 + --resume (bit for bit)."""
    common = ["--data", tiny_store, "--no-distill", "--preset", "tiny", "--epochs", "3", "--deterministic", "-q"]
    assert cli("train", *common, "--name", "full").exit_code == 0
    interrupt_then_resume(cli, monkeypatch, common, "cut")
    a = checkpoint.load(workdir / "runs/train/full/weights/last.pt")["state_dict"]
    b = checkpoint.load(workdir / "runs/train/cut/weights/last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_loss_stops_with_epoch_and_batch(tiny_store, cli, workdir, monkeypatch):
    from gmenet_cli import losses as distill

    real = distill.ClassificationLoss.forward
    count = {"n": 0}

    def poisoned(self, logits, batch):
        loss = real(self, logits, batch)
        if not self.training:  # validation batches do not count
            return loss
        count["n"] += 1
        return loss * float("nan") if count["n"] == 6 else loss  # 4 batches per epoch: epoch 2, batch 2

    monkeypatch.setattr(distill.ClassificationLoss, "forward", poisoned)
    res = cli("train", "--data", tiny_store, "--no-distill", "--preset", "tiny", "--epochs", "3", "--name", "nan", "-q")
    assert res.exit_code == 1
    assert "non-finite loss" in res.stderr and "epoch 2, batch 2" in res.stderr
    assert checkpoint.load(workdir / "runs/train/nan/weights/last.pt")["epoch"] == 1


def test_bare_train_takes_latest_store_and_teacher(tiny_store, tiny_runs, cli, workdir):
    shutil.copytree(tiny_store, workdir / "prepared" / "tiny")
    shutil.copytree(tiny_runs["teacher"].parent.parent, workdir / "runs" / "distill-teacher" / "exp")
    res = cli("train", "--preset", "tiny", "--epochs", "1", "-q")
    assert res.exit_code == 0, res.output
    assert "most recent prepared store: prepared/tiny" in res.stderr
    assert "most recent teacher" in res.stderr
    assert (workdir / "runs/train/exp/weights/best.pt").is_file()
    res2 = cli("train", "--preset", "tiny", "--epochs", "1", "-q", "--no-distill")
    assert res2.exit_code == 0 and (workdir / "runs/train/exp2").is_dir()
    res3 = cli("evaluate", "--json")  # bare evaluate: the newest run, on the store it was trained on
    assert res3.exit_code == 0, res3.output
    assert "most recent model: runs/train/exp2/weights/best.pt" in res3.stderr


def test_mismatched_teacher_and_bad_options(tiny_store, tiny_runs, cli, workdir, tmp_path):
    # a teacher of another size does not pair with the student's maps
    res = cli("train", "--data", tiny_store, "--teacher", tiny_runs["teacher"], "--model", "gmenet_s", "--epochs", "1",
              "-q")
    assert res.exit_code == 2 and "same size letter" in res.stderr
    # a student checkpoint is not a teacher
    res = cli("train", "--data", tiny_store, "--teacher", tiny_runs["student"], "--preset", "tiny", "-q")
    assert res.exit_code == 2 and "not a teacher" in res.stderr  # not what --teacher takes: a usage error
    for args, msg in [
        (["--epochs", "-1"], "--epochs (train.epochs) must be at least 1"),
        (["--scales", "8"], "scale x8 is not in"),
        (["--model", "teacher_t"], "not a student model"),
        (["--set", "train.epoch=3"], "Did you mean 'train.epochs'"),
        (["--set", "optim.lr=abc"], "expects a number"),
        (["--preset", "nope"], "unknown preset"),
    ]:
        res = cli("train", "--data", tiny_store, "--no-distill", *args, "-q")
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.output
    missing = cli("train", "--data", tmp_path / "nope", "--no-distill", "-q")
    assert missing.exit_code == 2 and "prepared store not found" in missing.stderr


def test_a_student_teaches_a_smaller_student_at_its_own_scale(tiny_store, tiny_runs, cli, workdir):
    """distill.teacher_scale: the tiny 24/12 px student teaches a 12 px one reading the faces at x2; a scale that
    is not above the teacher's own is refused before training, naming the student's scales."""
    res = cli("train", "--data", tiny_store, "--teacher", tiny_runs["student"], "--preset", "tiny", "--scales", "4",
              "--set", "distill.teacher_scale=2", "--epochs", "1", "--name", "ta", "-q")
    assert res.exit_code == 0, res.output
    ck = checkpoint.load(workdir / "runs/train/ta/weights/best.pt")
    assert ck["teacher"]["scale"] == 2 and ck["teacher"]["model"] == "gmenet_t"
    assert ck["input"]["scales"] == [4]
    for value, msg in (("4", "must be below the student's scales (x4)"), ("5", "does not divide the data's 48px"),
                       ("0", "distill.teacher_scale must be at least 1")):
        res = cli("train", "--data", tiny_store, "--teacher", tiny_runs["student"], "--preset", "tiny",
                  "--scales", "4", "--set", f"distill.teacher_scale={value}", "-q")
        assert res.exit_code == 2 and msg in res.stderr, (value, res.output)
        assert "Traceback" not in res.output


def test_ddp_shards_are_disjoint_and_equal(tiny_store):
    split = Store(tiny_store).split("train")
    shards = []
    for rank in range(2):
        loader = PairedBatches(split, 8, [2], seed=0, rank=rank, world=2, drop_last=True)
        loader.set_epoch(3)
        shards.append(set(loader.indices().tolist()))
    assert not shards[0] & shards[1]
    assert len(shards[0]) == len(shards[1]) == split.count // 2


def test_stored_lowres_faces_get_the_augmentation_of_their_hr_face(tiny_store):
    """A store with its own LR degradation: the student's stored LR face is warped exactly like its HR face.
    A mirror image is exact at any size; with rotation and zoom the stored face must stay close to the
    augmented HR face shrunk (not to the unaugmented one)."""
    from gmenet_cli.data.augment import make_views

    split = Store(tiny_store).split("train")
    for geometric, tol in (
        ({"shift": 0, "scale": 0, "rotate": 0}, 1.5 / 255),
        ({"shift": 4, "scale": 0.1, "rotate": 10}, 0.1),
    ):
        loader = PairedBatches(split, 16, [4], seed=1, stored_lowres=True, online={**geometric, "erase": 0})
        batch = next(iter(loader))
        raw = batch["hr"].clone()
        ((pos, stored),) = batch["stored"].values()
        views = make_views(batch, student=True)
        ((pos2, low),) = views["lowres"].values()
        assert torch.equal(pos, pos2)
        down = torch.nn.functional.avg_pool2d(views["hr"][pos], 4)
        inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # away from the replicated border
        assert (down - low)[inner].abs().mean() <= tol
        if geometric["rotate"]:
            plain = torch.nn.functional.avg_pool2d(raw[pos].float() / 255, 4)
            assert (plain - low)[inner].abs().mean() > (down - low)[inner].abs().mean()


@pytest.mark.slow  # ~20 s: four torchrun processes
@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU test on Linux")
def test_torchrun_two_cpu_processes(tmp_path, cli):
    # An odd number of faces per split: training drops the remainder (equal shards keep DDP in step),
    # validation must still count every face, as a one-process evaluate does.
    import synth

    root = tmp_path / "ferplus"
    for split in ("FER2013Train", "FER2013Valid"):  # one more face: 25 per split, every class present
        (root / split).mkdir(parents=True)
        cv2.imwrite(str(root / split / "extra.png"), synth.face(1, 48, seed=7))
    synth.make_ferplus(root, per_class=3, extra_rows=[["extra.png", "(0, 0, 48, 48)", 0, 10, 0, 0, 0, 0, 0, 0, 0, 0]])
    store = tmp_path / "store"
    res = cli("prepare", "--src", "ferplus", "--root", root, "--scale", "2", "--out", store)
    assert res.exit_code == 0, res.output
    n_train, n_val = Store(store).split("train").count, Store(store).split("val").count
    assert n_train % 2 == 1 and n_val % 2 == 1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "gmenet_cli",
        "distill-teacher",
        "--data",
        str(store),
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--set",
        "train.batch_size=4",
        "--device",
        "cpu",
        "--name",
        "ddp",
        "-q",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = tmp_path / "runs/distill-teacher/ddp/weights/last.pt"
    ck = checkpoint.load(last)
    assert ck["epoch"] == 1 and ck["finished"]
    rows = _rows(tmp_path / "runs/distill-teacher/ddp")
    assert int(rows[0]["train_images"]) == (n_train // 2 // 4) * 4 * 2  # both ranks' batches, each sample once
    assert proc.stderr.count("done") == 1  # only rank 0 reports and writes
    res = cli("evaluate", "--weights", last, "--data", store, "--split", "val", "--out", tmp_path / "ev")
    assert res.exit_code == 0, res.output
    one = json.loads((tmp_path / "ev" / "metrics.json").read_text())["models"][0]["results"][0]
    assert one["count"] == n_val
    assert float(rows[0]["val_acc"]) == pytest.approx(one["accuracy"], abs=1e-9)
    assert float(rows[0]["val_mca"]) == pytest.approx(one["mean_class_accuracy"], abs=1e-9)
    # the student under torchrun: DDP around the student, the frozen teacher on every rank, A-SKD + KD
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29518",
        "-m",
        "gmenet_cli",
        "train",
        "--data",
        str(store),
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--teacher",
        str(last),
        "--set",
        "train.batch_size=4",
        "--device",
        "cpu",
        "--name",
        "ddp_s",
        "-q",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(tmp_path / "runs/train/ddp_s")
    assert int(rows[0]["train_images"]) == (n_train // 2 // 4) * 4 * 2 and float(rows[0]["train_askd"]) > 0
    student = checkpoint.load(tmp_path / "runs/train/ddp_s/weights/last.pt")
    assert student["kind"] == "student" and student["finished"] and proc.stderr.count("done") == 1


def test_loader_shards_cover_the_split_for_validation(tiny_store):
    split = Store(tiny_store).split("val")
    n = split.count
    for world in (2, 3, 5):
        seen, even = [], []
        for rank in range(world):
            val = PairedBatches(split, 7, [2], shuffle=False, rank=rank, world=world, even=False)
            got = [int(i) for b in val for i in b["index"]]
            assert len(val) == -(-len(got) // 7) and got == val.indices().tolist()
            seen.append(got)
            even.append(len(PairedBatches(split, 7, [2], shuffle=False, rank=rank, world=world).indices()))
        assert sorted(i for s in seen for i in s) == list(range(n))  # every face once, on some rank
        assert even == [n // world] * world  # training shards stay equal


def test_init_starts_from_a_checkpoint_and_refuses_a_mismatch(tiny_store, tiny_runs, cli, workdir):
    student, teacher = tiny_runs["student"], tiny_runs["teacher"]
    common = [
        "--data",
        tiny_store,
        "--teacher",
        teacher,
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "-q",
        "--set",
        "optim.lr=1e-12",
        "--set",
        "optim.weight_decay=0",
    ]
    res = cli("train", *common, "--init", student, "--name", "ft")
    assert res.exit_code == 0, res.output
    assert "starting from the weights of" in res.stderr
    res = cli("train", *common, "--name", "fresh")
    assert res.exit_code == 0, res.output
    before = checkpoint.load(student)
    tuned = checkpoint.load(workdir / "runs/train/ft/weights/best.pt")
    fresh = checkpoint.load(workdir / "runs/train/fresh/weights/best.pt")
    assert tuned["init"]["path"] == str(Path(student).resolve()) and "init" not in fresh
    convs = [k for k, v in before["state_dict"].items() if k.endswith("weight") and v.ndim == 4]
    assert convs
    for k in convs:  # at a learning rate of 1e-12 the weights stay where --init put them
        assert torch.allclose(tuned["state_dict"][k], before["state_dict"][k], atol=1e-6), k
    assert not all(torch.allclose(fresh["state_dict"][k], before["state_dict"][k], atol=1e-6) for k in convs)
    # the same for the teacher
    res = cli(
        "distill-teacher",
        "--data",
        tiny_store,
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "-q",
        "--init",
        teacher,
        "--name",
        "tft",
    )
    assert res.exit_code == 0 and checkpoint.load(workdir / "runs/distill-teacher/tft/weights/best.pt")["init"]
    nodistill = ["--data", tiny_store, "--preset", "tiny", "--epochs", "1", "-q", "--no-distill"]
    for args, code, msg in [
        (["train", *common, "--init", teacher], 2, "is a teacher checkpoint"),
        (
            ["distill-teacher", "--data", tiny_store, "--preset", "tiny", "-q", "--init", student],
            2,
            "is a student checkpoint",
        ),
        (["train", *nodistill, "--init", student, "--model", "gmenet_s"], 1, "pass --model gmenet_t"),
        (["train", *nodistill, "--init", student, "--no-global"], 1, "global_branch: default there, False here"),
        (["train", *nodistill, "--init", "default"], 1, "holds a gmenet_s2, this run trains a gmenet_t"),
        (["train", *common, "--init", student, "--resume", "--name", "ft"], 2, "use one"),
        (["train", *common, "--init", workdir / "nope.pt"], 2, "checkpoint not found"),
    ]:
        res = cli(*args)
        assert res.exit_code == code, (args, res.output)
        assert msg in res.stderr and "Traceback" not in res.output, (args, res.stderr)


def test_a_degraded_store_trains_the_same_teacher(tmp_path, cli, monkeypatch):
    """The teacher reads HR faces only: a store prepared with --blur (its LR faces differ, its HR faces do not)
    must train the very same teacher, with the same augmentation, as a plain store; the student there reads
    the stored LR faces and says so."""
    import synth

    monkeypatch.chdir(tmp_path)
    root = synth.make_ferplus(tmp_path / "ferplus", per_class=4)
    for name, extra in (("plain", []), ("blurred", ["--blur", "1.0"])):
        res = cli("prepare", "--src", "ferplus", "--root", root, "--scale", "4", "--out", tmp_path / name, *extra)
        assert res.exit_code == 0, res.output
    weights = {}
    for name in ("plain", "blurred"):
        res = cli(
            "distill-teacher",
            "--data",
            tmp_path / name,
            "--preset",
            "tiny",
            "--epochs",
            "1",
            "--name",
            f"t_{name}",
            "--deterministic",
            "-q",
        )
        assert res.exit_code == 0, res.output
        weights[name] = checkpoint.load(tmp_path / "runs" / "distill-teacher" / f"t_{name}" / "weights" / "last.pt")[
            "state_dict"
        ]
    assert all(torch.equal(weights["plain"][k], weights["blurred"][k]) for k in weights["plain"])
    res = cli(
        "train",
        "--data",
        tmp_path / "blurred",
        "--preset",
        "tiny",
        "--epochs",
        "1",
        "--name",
        "s",
        "-q",
        "--teacher",
        tmp_path / "runs" / "distill-teacher" / "t_blurred" / "weights" / "best.pt",
    )
    assert res.exit_code == 0, res.output
    assert "reads its stored LR faces, augmented like their HR face" in res.stderr


def test_the_shipped_recipe_runs_end_to_end(tiny_store, cli, workdir):
    """The ferplus preset exactly as it ships (SGD + Nesterov one-cycle, EMA, vote targets, on-the-fly
    augmentation, A-SKD with pooled maps + logit KD), at the smallest sizes of its model family ("t2"),
    through distill-teacher -> train -> evaluate -> export -> predict."""
    common = ["--preset", "ferplus", "--epochs", "2", "--set", "train.batch_size=16", "-q"]
    res = cli("distill-teacher", "--data", tiny_store, "--model", "teacher_t2", "--name", "t", *common)
    assert res.exit_code == 0, res.output
    teacher = workdir / "runs/distill-teacher/t/weights/best.pt"
    res = cli("train", "--data", tiny_store, "--model", "gmenet_t2", "--teacher", teacher, "--name", "s", *common)
    assert res.exit_code == 0, res.output
    assert "teacher runs in int8" in res.stdout + res.stderr  # the preset's choice, told (it is not exact)
    best = workdir / "runs/train/s/weights/best.pt"
    ckpt = checkpoint.load(best)
    cfg = ckpt["config"]
    recipe = (cfg["optim"]["name"], cfg["optim"]["schedule"], cfg["train"]["ema"], cfg["train"]["soft_labels"])
    assert recipe == ("sgd", "onecycle", 0.998, True)
    assert cfg["distill"]["teacher_runtime"] == "auto-int8"  # the int8 teacher on the CPU (BENCHMARKS.md)
    assert ckpt["model"]["name"] == "gmenet_t2" and ckpt["teacher"]["model"] == "teacher_t2"
    rows = _rows(workdir / "runs/train/s")
    assert float(rows[-1]["train_askd"]) > 0 and float(rows[-1]["train_kd"]) > 0  # both distillation terms ran
    assert set(ckpt["calibration"]["temperature"]) == {"12", "24"}
    res = cli("evaluate", "--weights", best, "--json", "--out", workdir / "ev")
    assert res.exit_code == 0, res.output
    assert [r["face_px"] for r in json.loads(res.stdout)["models"][0]["results"]] == [24, 12]
    assert cli("export", "--weights", best).exit_code == 0
    photo = cv2.imread(str(Path(__file__).parents[1] / "examples" / "astronaut.png"))
    cv2.imwrite(str(workdir / "face.png"), cv2.resize(photo[40:200, 150:310], (14, 14), interpolation=cv2.INTER_AREA))
    res = cli("predict", workdir / "face.png", "--no-detect", "--json", "--weights", best.with_suffix(".onnx"))
    (row,) = json_lines(res.stdout)
    assert res.exit_code == 0 and row["input_px"] == 12 and row["label"] in ckpt["classes"]


def test_fine_tuning_keeps_its_geometry_and_picks_no_teacher(tiny_store, tiny_runs, cli, workdir):
    """`train --init` bare must not take whatever store and teacher are newest: the model's own scales, a
    store that has them (else one line saying what to pass), no auto-picked teacher; an auto-picked teacher
    whose run is unfinished is named as such."""
    import synth

    shutil.copytree(tiny_runs["base"] / "runs", workdir / "runs")  # a finished teacher and student
    root = synth.make_ferplus(workdir / "ferplus", per_class=2)
    res = cli("prepare", "--src", "ferplus", "--root", root, "--scale", "4", "--out", workdir / "prepared" / "x4")
    assert res.exit_code == 0
    res = cli("train", "--init", tiny_runs["student"], "--preset", "tiny", "--epochs", "1", "-q")
    assert res.exit_code == 2 and "scale x2 is not in the most recent prepared store prepared/x4" in res.stderr
    assert "pass --data with a store made by gmenet prepare --scale 2,4" in res.stderr
    res = cli("train", "--init", tiny_runs["student"], "--data", tiny_store, "--preset", "tiny", "--epochs", "1",
              "--name", "ft", "-q")
    assert res.exit_code == 0, res.output
    assert "without a teacher (none is picked for --init" in res.stderr and "most recent teacher" not in res.stderr
    ft = checkpoint.load(workdir / "runs/train/ft/weights/best.pt")
    assert ft["distill"] is False and ft["input"]["scales"] == [2, 4]
    teacher_last = workdir / "runs/distill-teacher/t/weights/last.pt"
    checkpoint.save(teacher_last, {**checkpoint.load(teacher_last), "finished": False, "epoch": 1})
    res = cli("train", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "--name", "s2", "-q")
    assert res.exit_code == 0 and "(warning: its run is unfinished, 1 of 2 epochs" in res.stderr


def test_resume_with_a_run_folder_elsewhere_says_what_to_run(workdir, capsys):
    from gmenet_cli.cli import resume_path_argv

    assert resume_path_argv(["evaluate", "--resume", "x"]) == ["evaluate", "--resume", "x"]  # not a training command
    assert resume_path_argv(["train", "--resume", "--name", "r"]) == ["train", "--resume", "--name", "r"]
    with pytest.raises(SystemExit) as e:
        resume_path_argv(["distill-teacher", "--resume", "/elsewhere/runs/train/r"])
    assert e.value.code == 2
    msg = capsys.readouterr().err
    assert "gmenet distill-teacher --resume --name r" in msg and "runs/distill-teacher/" in msg
