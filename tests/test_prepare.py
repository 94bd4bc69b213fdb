"""`gmenet prepare` on every supported layout, determinism, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import synth

from gmenet_cli.config import PrepareConfig
from gmenet_cli.data.prepare import prepare
from gmenet_cli.data.store import Store
from gmenet_cli.errors import DataError, UsageError


def _manifest(store: Path) -> dict:
    return json.loads((store / "manifest.json").read_text())


def test_ferplus_counts_labels_and_sizes(tmp_path, cli):
    root = synth.make_ferplus(tmp_path / "fp", per_class=3)
    res = cli("prepare", "--src", "ferplus", "--root", root, "--scale", "2,4,8", "--out", tmp_path / "s", "--json")
    assert res.exit_code == 0, res.output
    manifest = json.loads(res.stdout)
    assert manifest["classes"] == [
        "neutral",
        "happiness",
        "surprise",
        "sadness",
        "anger",
        "disgust",
        "fear",
        "contempt",
    ]
    assert manifest["splits"]["train"]["count"] == 24  # 8 classes x 3; the unknown and NF rows are dropped
    assert manifest["splits"]["val"]["count"] == 24
    assert manifest["dropped"] == {"unknown/NF majority": 4}
    assert manifest["lr_sizes"] == {"2": 24, "4": 12, "8": 6}
    store = Store(tmp_path / "s")
    train = store.split("train")
    assert train.hr.shape == (24, 1, 48, 48)
    assert train.lowres[8].shape == (24, 1, 6, 6)
    assert train.labels.tolist() == [c for c in range(8) for _ in range(3)]
    # The LR face is the area-downsampled HR face (block means).
    hr = train.hr[0, 0].astype(np.float64)
    expected = hr.reshape(12, 4, 12, 4).mean(axis=(1, 3))
    assert np.abs(train.lowres[4][0, 0] - expected).max() <= 1.0


def test_ferplus_seven_classes_and_votes(tmp_path):
    root = synth.make_ferplus(tmp_path / "fp", per_class=2)
    out, manifest = prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4], classes=7, label_mode="votes"))
    assert "contempt" not in manifest["classes"]
    assert manifest["dropped"]["contempt (7-class mode)"] == 2 * 2  # contempt rows in both splits
    votes = Store(out).split("train").votes
    assert votes.shape == (14, 7)
    assert np.allclose(votes.sum(1), 1.0)


def test_fer2013_csv(tmp_path):
    root = synth.make_fer2013(tmp_path / "fer", per_class=2)
    out, manifest = prepare("fer2013", root, tmp_path / "s", PrepareConfig(scales=[4]))
    assert set(manifest["splits"]) == {"train", "val", "test"}
    assert all(manifest["splits"][s]["count"] == 14 for s in ("train", "val", "test"))
    # emotion 0 (angry) maps to canonical "anger"; classes come out in canonical order
    assert manifest["classes"] == ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"]
    labels = Store(out).split("train").labels
    assert labels[0] == manifest["classes"].index("anger")


def test_raf_official_and_repacked(tmp_path):
    out, m = prepare("raf", synth.make_raf(tmp_path / "raf", per_class=2), tmp_path / "s", PrepareConfig(scales=[8]))
    assert m["hr_size"] == 112 and m["lr_sizes"] == {"8": 14} and m["channels"] == 3
    assert m["splits"]["train"]["count"] == 14 and m["splits"]["test"]["count"] == 14
    assert Store(out).split("test").hr.shape == (14, 3, 112, 112)
    # label 1 = surprise in RAF-DB
    assert Store(out).split("train").labels[0] == m["classes"].index("surprise")
    out2, m2 = prepare("raf", synth.make_raf_repacked(tmp_path / "raf2"), tmp_path / "s2", PrepareConfig(scales=[8]))
    assert m2["splits"]["train"]["count"] == 14 and m2["classes"] == m["classes"]


def test_expw_boxes_and_photo_split(tmp_path):
    out, m = prepare(
        "expw",
        synth.make_expw(tmp_path / "expw", photos=20),
        tmp_path / "s",
        PrepareConfig(scales=[8], val_ratio=0.2, test_ratio=0.2),
    )
    total = sum(s["count"] for s in m["splits"].values())
    assert total == 40
    store = Store(out)
    ids = {split: (out / split / "ids.txt").read_text().split() for split in store.splits}
    photos = {split: {i.split("#")[0] for i in v} for split, v in ids.items()}
    splits = list(photos)
    for a in splits:  # both faces of a photo always land in one split
        for b in splits:
            if a != b:
                assert not photos[a] & photos[b]


def test_affectnet_drops_non_expressions(tmp_path):
    root = synth.make_affectnet(tmp_path / "an", per_class=2)
    _, m7 = prepare("affectnet", root, tmp_path / "s7", PrepareConfig(scales=[8]))
    assert m7["splits"]["train"]["count"] == 7 * 2
    assert m7["dropped"] == {"contempt (7-class mode)": 4, "none/uncertain/non-face": 12}
    _, m8 = prepare("affectnet", root, tmp_path / "s8", PrepareConfig(scales=[8], classes=8))
    assert "contempt" in m8["classes"] and m8["splits"]["val"]["count"] == 16


def test_folder_layouts_and_group_split(tmp_path):
    _, m = prepare(
        "folder",
        synth.make_folder(tmp_path / "f1", with_splits=True),
        tmp_path / "s1",
        PrepareConfig(scales=[4], hr_size=64),
    )
    assert m["splits"]["train"]["count"] == 16 and m["splits"]["val"]["count"] == 4
    assert m["classes"] == ["neutral", "happiness", "sadness", "anger"]  # synonyms mapped, canonical order
    out, m2 = prepare(
        "folder",
        synth.make_folder(tmp_path / "f2", per_class=12),
        tmp_path / "s2",
        PrepareConfig(scales=[4], hr_size=64, group_regex=r"subj\d+", val_ratio=0.3, test_ratio=0.3),
    )
    subjects = {}
    for split in m2["splits"]:
        for i in (out / split / "ids.txt").read_text().split():
            subjects.setdefault(Path(i).name.split("_")[0], set()).add(split)
    assert all(len(s) == 1 for s in subjects.values())  # one subject, one split


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    root = synth.make_ferplus(tmp_path / "fp", per_class=4)
    cfg = PrepareConfig(scales=[2, 4], noise_std=3.0, jpeg_quality=70, blur_sigma=0.8, seed=7)
    a, ma = prepare("ferplus", root, tmp_path / "a", cfg, workers=1)
    b, mb = prepare("ferplus", root, tmp_path / "b", cfg, workers=3)
    assert ma["content_hash"] == mb["content_hash"]
    assert (a / "train" / "lr_x4.u8").read_bytes() == (b / "train" / "lr_x4.u8").read_bytes()
    c, mc = prepare(
        "ferplus",
        root,
        tmp_path / "c",
        PrepareConfig(scales=[2, 4], noise_std=3.0, jpeg_quality=70, blur_sigma=0.8, seed=8),
    )
    assert mc["content_hash"] != ma["content_hash"]  # the seed does matter when degradations are random


def test_corrupt_images_are_skipped_and_reported(tmp_path, cli):
    root = synth.make_ferplus(tmp_path / "fp", per_class=2)
    train = root / "FER2013Train"
    first = sorted(train.glob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:40])  # truncated
    second = sorted(train.glob("*.png"))[1]
    second.write_bytes(b"")  # zero bytes
    res = cli("prepare", "--src", "ferplus", "--root", root, "--scale", "4", "--out", tmp_path / "s")
    assert res.exit_code == 0, res.output
    assert "skipped 2" in res.stderr
    report = (tmp_path / "s" / "skipped.tsv").read_text().splitlines()
    assert len(report) == 3 and first.name in report[1] + report[2]
    strict = cli("prepare", "--src", "ferplus", "--root", root, "--scale", "4", "--out", tmp_path / "s2", "--strict")
    assert strict.exit_code == 1 and "--strict" in strict.stderr
    assert not (tmp_path / "s2").exists()  # nothing half-written


@pytest.mark.parametrize(
    "args, message",
    [
        (["--src", "ferplus", "--root", "MISSING", "--scale", "4"], "dataset root not found"),
        (["--src", "nope", "--root", ".", "--scale", "4"], "unknown source 'nope'"),
        (["--src", "ferplus", "--root", ".", "--scale", "0"], "--scale (prepare.scales) must be in [2, 32], got 0"),
        (["--src", "ferplus", "--root", ".", "--scale", "x"], "--scale expects integers"),
        (["--src", "ferplus", "--root", ".", "--scale", "5"], "not divisible by scale 5"),
        (
            ["--src", "ferplus", "--root", ".", "--scale", "4", "--method", "lanczos"],
            "--method (prepare.method) must be one of area, bicubic",
        ),
        (["--src", "raf", "--root", ".", "--scale", "8"], "EmoLabel/list_patition_label.txt"),
    ],
)
def test_bad_input_one_clear_line(tmp_path, cli, monkeypatch, args, message):
    synth.make_ferplus(tmp_path / "FER", per_class=1)
    monkeypatch.chdir(tmp_path / "FER")
    res = cli("prepare", *args)
    assert res.exit_code != 0
    assert message in res.stderr
    assert "Traceback" not in res.output
    assert not (tmp_path / "FER" / "prepared").exists() or not any(
        (tmp_path / "FER" / "prepared").glob("*/manifest.json")
    )


def test_layout_mismatch_names_the_expected_file(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="FER2013Train"):
        prepare("ferplus", tmp_path / "empty", tmp_path / "s", PrepareConfig(scales=[4]))
    with pytest.raises(DataError, match="fer2013.csv"):
        prepare("fer2013", tmp_path / "empty", tmp_path / "s", PrepareConfig(scales=[4]))
    with pytest.raises(DataError, match="label.lst"):
        prepare("expw", tmp_path / "empty", tmp_path / "s", PrepareConfig(scales=[4]))
    with pytest.raises(DataError, match="training.csv"):
        prepare("affectnet", tmp_path / "empty", tmp_path / "s", PrepareConfig(scales=[4]))


def test_bad_label_rows(tmp_path):
    root = synth.make_ferplus(tmp_path / "fp", per_class=1, splits=("FER2013Train",))
    csv = root / "FER2013Train" / "label.csv"
    good = csv.read_text()
    csv.write_text(good + 'x.png,"(0, 0, 48, 48)",1,2\n')
    with pytest.raises(DataError, match="expected 12 columns"):
        prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]))
    csv.write_text(good + 'x.png,"(0, 0, 48, 48)",a,0,0,0,0,0,0,0,0,0\n')
    with pytest.raises(DataError, match="must be numbers"):
        prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]))
    csv.write_bytes(good.encode() + b"\xff\xfe bad\n")
    with pytest.raises(DataError, match="not UTF-8"):
        prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]))
    # CRLF and a BOM are fine
    csv.write_bytes(b"\xef\xbb\xbf" + good.replace("\n", "\r\n").encode())
    _, m = prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]))
    assert m["splits"]["train"]["count"] == 8


def test_paths_outside_the_root_are_refused(tmp_path):
    root = synth.make_ferplus(tmp_path / "fp", per_class=1, splits=("FER2013Train",))
    csv = root / "FER2013Train" / "label.csv"
    good = csv.read_text()
    for bad in ("../../etc/passwd", "/etc/passwd"):
        csv.write_text(good + f'{bad},"(0, 0, 48, 48)",9,0,0,0,0,0,0,0,0,0\n')
        with pytest.raises(DataError, match="refused"):
            prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]))
    outside = tmp_path / "secret.png"
    outside.write_bytes(
        (root / "FER2013Train" / sorted(p.name for p in (root / "FER2013Train").glob("*.png"))[0]).read_bytes()
    )
    (root / "FER2013Train" / "link.png").symlink_to(outside)
    csv.write_text(good + 'link.png,"(0, 0, 48, 48)",9,0,0,0,0,0,0,0,0,0\n')
    out, m = prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]))
    assert m["skipped"]["count"] == 1
    assert "outside the dataset root" in (out / "skipped.tsv").read_text()


def test_rerun_replaces_store_and_refuses_foreign_folder(tmp_path):
    root = synth.make_ferplus(tmp_path / "fp", per_class=1)
    out, m1 = prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]))
    out, m2 = prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]))
    assert m1["content_hash"] == m2["content_hash"]
    assert not list(tmp_path.glob(".s.*"))  # no temp or backup folders left behind
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not a gmenet store"):
        prepare("ferplus", root, foreign, PrepareConfig(scales=[4]))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_incomplete_store_is_not_complete(tmp_path):
    root = synth.make_ferplus(tmp_path / "fp", per_class=1)
    out, _ = prepare("ferplus", root, tmp_path / "s", PrepareConfig(scales=[4]))
    (out / "manifest.json").unlink()
    with pytest.raises(DataError, match="not a complete prepared store"):
        Store(out)
    out, _ = prepare("ferplus", root, tmp_path / "s2", PrepareConfig(scales=[4]))
    with open(out / "train" / "hr.u8", "ab") as f:
        f.write(b"x")
    with pytest.raises(DataError, match="damaged"):
        Store(out)
