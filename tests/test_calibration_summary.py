"""Calibrated confidences (a temperature per face size, fitted at the end of training, applied by evaluate
and predict, carried into ONNX), `--min-confidence`, and per-input summaries in predict's output."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from conftest import ASTRONAUT, json_lines

from gmenet_cli import checkpoint
from gmenet_cli.calibrate import (
    calibrate,
    calibrated_softmax,
    describe,
    ece,
    fit_class_temperatures,
    fit_temperature,
    nll,
    reliability,
    softmax,
    temperature_for,
    temperatures_for,
)


def test_fit_temperature_recovers_a_known_temperature_and_lowers_the_error():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 8)) * 3
    p = softmax(logits, 2.5)  # the true probabilities are those of T = 2.5: the raw ones are over-confident
    labels = np.array([rng.choice(8, p=row) for row in p])
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    assert nll(logits, labels, t) < nll(logits, labels, 1.0)
    assert ece(softmax(logits, t), labels) < 0.03 < ece(softmax(logits), labels)
    rel = reliability(softmax(logits, t), labels)
    assert sum(rel["count"]) == 4000 and len(rel["count"]) == 15
    assert temperature_for({"temperature": {"12": 1.7}}, 12) == 1.7 and temperature_for(None, 12) == 1.0


def test_class_temperatures_fit_what_one_temperature_cannot():
    """Faces the model labels 0 are over-confident (true T 3), those it labels 1 under-confident (true T 0.5):
    one temperature per predicted class recovers both and brings the ECE down where one T cannot; the label
    (argmax) never moves."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6000, 4)) * 2
    true_t = np.where(logits.argmax(1) == 0, 3.0, np.where(logits.argmax(1) == 1, 0.5, 1.0))
    p = softmax(logits / true_t[:, None])
    labels = np.array([rng.choice(4, p=row) for row in p])
    temps = fit_class_temperatures(logits, labels)
    assert temps[0] == pytest.approx(3.0, rel=0.15) and temps[1] == pytest.approx(0.5, rel=0.15)
    probs = calibrated_softmax(logits, temps)
    assert np.allclose(probs.sum(1), 1) and (probs.argmax(1) == logits.argmax(1)).all()
    one = fit_temperature(logits, labels)
    assert ece(probs, labels) < 0.02 < ece(softmax(logits, one), labels)
    cal = calibrate({12: (logits, labels)})
    assert cal["method"] == "class-temperature" and len(cal["class_temperature"]["12"]) == 4
    assert cal["kept"]["12"] == "class" and cal["class_temperature"]["12"][0] == pytest.approx(temps[0], abs=1e-4)
    assert cal["ece_after"]["12"] < cal["ece_temperature"]["12"] and cal["ece_heldout"]["12"] < 0.03
    # faces that one temperature calibrates (true T 2.5 for every class): held out, class temperatures do no
    # better, so every class gets the one temperature
    p = softmax(logits, 2.5)
    labels = np.array([rng.choice(4, p=row) for row in p])
    one_t = calibrate({24: (logits, labels)})
    assert one_t["kept"]["24"] == "one" and one_t["class_temperature"]["24"] == [one_t["temperature"]["24"]] * 4
    # a class predicted for fewer than MIN_CLASS faces keeps the size's one temperature
    few = logits.argmax(1) != 3
    few[np.flatnonzero(logits.argmax(1) == 3)[:5]] = True
    z, y = logits[few], labels[few]
    assert fit_class_temperatures(z, y)[3] == pytest.approx(fit_temperature(z, y))
    # older checkpoints: the one temperature; none: 1
    assert temperatures_for({"temperature": {"12": 1.7}}, 12) == 1.7
    assert temperatures_for(None, 6) == 1.0
    assert temperatures_for(cal, 12) == cal["class_temperature"]["12"]


def test_calibration_never_makes_raw_confidences_worse_held_out():
    """Confidences already calibrated (labels drawn from the model's own softmax): a temperature fitted on
    400 faces only adds its fitting noise, so held out the raw confidences do better and are kept as they are
    (every temperature 1, the fitted one recorded); over-confident logits still get their temperature."""
    from gmenet_cli import calibrate as cal_mod

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(400, 8)) * 3
    labels = np.array([rng.choice(8, p=row) for row in softmax(logits)])
    cal = calibrate({12: (logits, labels)})
    heldout = {kind: cal_mod._heldout_ece(logits, labels, arg) for kind, arg in
               (("none", None), ("one", False), ("class", True))}
    assert heldout["none"] <= min(heldout["one"], heldout["class"])
    assert cal["kept"]["12"] == "none" and cal["temperature"]["12"] == 1.0
    assert cal["class_temperature"]["12"] == [1.0] * 8 and cal["temperature_fitted"]["12"] != 1.0
    assert cal["ece_after"]["12"] == cal["ece_before"]["12"] and cal["ece_heldout"]["12"] == round(heldout["none"], 4)
    over = calibrate({12: (logits * 2.5, labels)})  # the same faces, logits 2.5x too confident
    assert over["kept"]["12"] != "none" and over["temperature"]["12"] == pytest.approx(2.5, rel=0.2)


def test_describe_words_each_kept_choice_with_its_numbers():
    """train's last line and `gmenet calibrate` print a size through one describe(): its wording follows what
    was kept, with the numbers of the entry."""
    cal = {"temperature": {"12": 1.5, "24": 0.8, "6": 1.0}, "temperature_fitted": {"12": 1.5, "24": 0.8, "6": 1.1},
           "kept": {"12": "class", "24": "one", "6": "none"},
           "class_temperature": {"12": [1.2, 1.9], "24": [0.8, 0.8], "6": [1.0, 1.0]},
           "ece_before": {"12": 0.1, "24": 0.05, "6": 0.02}, "ece_after": {"12": 0.01, "24": 0.02, "6": 0.02},
           "ece_heldout": {"12": 0.015, "24": 0.025, "6": 0.021}}
    assert describe(cal, 12) == ("T 1.500, per predicted class 1.200-1.900; ECE 0.1000 -> 0.0100 "
                                 "(held out 0.0150)")
    assert describe(cal, "24") == "T 0.800 for every class; ECE 0.0500 -> 0.0200 (held out 0.0250)"
    assert describe(cal, 6) == ("no temperature (the fitted 1.100 does not calibrate better held out); "
                                "ECE 0.0200 as trained")


def test_training_calibrates_best_pt_for_every_trained_size(tiny_runs):
    for kind, sizes in (("student", {"12", "24"}), ("teacher", {"48"})):
        cal = checkpoint.load(tiny_runs[kind])["calibration"]
        assert set(cal["temperature"]) == sizes and cal["split"] == "val"
        assert all(0.05 <= t <= 20 for t in cal["temperature"].values())
    # train's last line says what was kept for each size, in calibrate.describe's words
    log = tiny_runs["student_log"].replace("\n", " ")
    cal = checkpoint.load(tiny_runs["student"])["calibration"]
    assert f"calibrated best.pt on val: 12px {describe(cal, 12)}; 24px {describe(cal, 24)}" in log, log


def _with_temperature(src, dst, temps: dict, per_class: dict | None = None):
    ckpt = checkpoint.load(src)
    cal = {"temperature": temps, **({"class_temperature": per_class} if per_class else {})}
    checkpoint.save(dst, {**ckpt, "calibration": cal})
    return dst


def _face(workdir, px: int):
    face = cv2.imread(str(ASTRONAUT))[40:200, 150:310]
    path = workdir / f"face{px}.png"
    cv2.imwrite(str(path), cv2.resize(face, (px, px), interpolation=cv2.INTER_AREA))
    return path


def test_predict_divides_the_logits_by_the_temperature_of_the_face_size(tiny_runs, cli, workdir):
    """probs(T) = softmax(z / T): so probs(T=3) is probs(T=1) ** (1/3), renormalised, for the same face, in
    the .pt and in its ONNX export (the temperature travels in the metadata)."""
    one = _with_temperature(tiny_runs["student"], workdir / "t1.pt", {"12": 1.0, "24": 1.0})
    three = _with_temperature(tiny_runs["student"], workdir / "t3.pt", {"12": 3.0, "24": 1.0})
    face = _face(workdir, 14)  # read at 12 px
    got = {}
    for name, w in (("one", one), ("three", three)):
        (r,) = json_lines(cli("predict", face, "--no-detect", "--json", "--weights", w).stdout)
        assert r["input_px"] == 12
        got[name] = np.array(list(r["probs"].values()))
    expect = got["one"] ** (1 / 3)
    assert np.allclose(got["three"], expect / expect.sum(), atol=2e-3)
    # class temperatures: T 3 for the class this face's logits put on top, 1 for the others (and a single
    # temperature of 1, which they override): the face gets T 3, the probabilities of "three"
    top = int(got["one"].argmax())
    per_class = {"12": [3.0 if k == top else 1.0 for k in range(len(got["one"]))], "24": [1.0] * len(got["one"])}
    by_class = _with_temperature(tiny_runs["student"], workdir / "tk.pt", {"12": 1.0, "24": 1.0}, per_class)
    (r,) = json_lines(cli("predict", face, "--no-detect", "--json", "--weights", by_class).stdout)
    assert np.allclose(np.array(list(r["probs"].values())), got["three"], atol=2e-3)
    for w in (three, by_class):  # the temperatures travel in the ONNX metadata
        assert cli("export", "--weights", w).exit_code == 0
        (r,) = json_lines(cli("predict", face, "--no-detect", "--json", "--weights", w.with_suffix(".onnx")).stdout)
        assert np.allclose(np.array(list(r["probs"].values())), got["three"], atol=2e-3)


def test_evaluate_reports_ece_with_the_stored_temperature_and_draws_the_diagram(tiny_runs, tiny_store, cli, workdir):
    res = cli("evaluate", "--weights", tiny_runs["student"], "--data", tiny_store, "--split", "val", "--json",
              "--out", workdir / "ev")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    cal = checkpoint.load(tiny_runs["student"])["calibration"]
    for r in report["models"][0]["results"]:
        assert r["temperature"] == pytest.approx(cal["temperature"][str(r["face_px"])])
        assert r["ece"] == pytest.approx(r["reliability"]["ece"]) and 0 <= r["ece"] <= 1
    assert (workdir / "ev" / "reliability.png").is_file()
    assert "ECE" in res.stderr and "recall per class and face size" in res.stderr


def test_calibrate_command_fits_an_uncalibrated_checkpoint(tiny_runs, tiny_store, cli, workdir):
    ckpt = checkpoint.load(tiny_runs["student"])
    bare = workdir / "bare.pt"
    checkpoint.save(bare, {k: v for k, v in ckpt.items() if k != "calibration"})
    res = cli("calibrate", "--weights", bare, "--data", tiny_store)
    assert res.exit_code == 0, res.output
    cal = checkpoint.load(bare)["calibration"]
    assert set(cal["temperature"]) == set(cal["class_temperature"]) == {"12", "24"}
    assert cal["kept"]["12"] in ("class", "one", "none") and len(cal["class_temperature"]["12"]) == 8
    assert "Next: gmenet export" in res.stderr and "wrote the temperatures into" in res.stderr
    for px in ("12", "24"):  # one line per size, in calibrate.describe's words
        assert f"{px}px: {describe(cal, px)}" in res.stderr.replace("\n", " "), res.stderr
    after = checkpoint.load(bare)["state_dict"]
    assert all(torch.equal(after[k], v) for k, v in ckpt["state_dict"].items())  # only the confidences change
    res = cli("calibrate", "--weights", bare, "--data", tiny_store, "--split", "nope")
    assert res.exit_code == 2 and "no 'nope' split" in res.stderr


def test_min_confidence_marks_uncertain_faces_and_keeps_the_guess(tiny_runs, cli, workdir):
    face = _face(workdir, 30)
    (sure,) = json_lines(cli("predict", face, "--no-detect", "--json", "--weights", tiny_runs["student"]).stdout)
    (unsure,) = json_lines(cli("predict", face, "--no-detect", "--json", "--weights", tiny_runs["student"],
                               "--min-confidence", "1").stdout)
    assert unsure["label"] == "uncertain" and unsure["guess"] == sure["label"] and unsure["probs"] == sure["probs"]
    res = cli("predict", face, "--no-detect", "--csv", "--weights", tiny_runs["student"], "--min-confidence", "1")
    header, row = res.stdout.splitlines()[:2]
    fields = dict(zip(header.split(","), row.split(",")))
    assert fields["label"] == "uncertain" and fields["guess"] == sure["label"]
    assert fields["input_px"] == "24" and fields["detector_score"] == "1.0"  # the JSON's fields, in the CSV too
    res = cli("predict", face, "--no-detect", "--weights", tiny_runs["student"], "--min-confidence", "1.5")
    assert res.exit_code == 2


def test_predict_summarises_each_input(tiny_runs, cli, workdir):
    """--json --summary: one summary record after each input's faces (plain --json: faces only, each with a
    label, so `jq -r .label` gives one line per face); the table ends with one line per input."""
    boxes = workdir / "boxes.csv"
    two = _face(workdir, 64)
    blank = workdir / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    boxes.write_text(f"file,x,y,w,h\n{two},0,0,32,32\n{two},32,32,32,32\n{ASTRONAUT},176,66,96,96\n")
    plain = cli("predict", two, ASTRONAUT, blank, "--boxes", boxes, "--json", "--weights", tiny_runs["student"])
    assert plain.exit_code == 1 and "blank.png" in plain.stderr  # the faceless input: on stderr and the exit code
    assert [("label" in r, r["file"]) for r in json_lines(plain.stdout, summaries=True)] == [
        (True, str(two)), (True, str(two)), (True, str(ASTRONAUT))]
    res = cli("predict", two, ASTRONAUT, "--boxes", boxes, "--json", "--summary", "--weights", tiny_runs["student"])
    records = json_lines(res.stdout, summaries=True)
    assert [("summary" in r, r["file"]) for r in records] == [
        (False, str(two)), (False, str(two)), (True, str(two)), (False, str(ASTRONAUT)), (True, str(ASTRONAUT))]
    s = records[2]["summary"]
    labels = [r["label"] for r in records[:2]]
    assert s["faces"] == 2 and s["labels"] == {k: labels.count(k) for k in labels}
    table = cli("predict", two, ASTRONAUT, "--boxes", boxes, "--weights", tiny_runs["student"])
    lines = table.stdout.strip().splitlines()
    assert lines[-2].startswith(f"{two}: 2 faces: ") and lines[-1].startswith(f"{ASTRONAUT}: 1 face: ")


def test_video_summary_counts_tracks_and_smoothed_labels():
    from gmenet_cli.predict.summary import InputSummary

    s = InputSummary("clip.mp4")
    for frame, track, label in [(0, 1, "happiness"), (0, 2, "neutral"), (5, 1, "happiness"), (10, 1, "neutral"),
                                (10, 2, "neutral")]:
        s.add({"file": "clip.mp4", "frame": frame, "label": "x", "track": track, "smoothed_label": label})
    rec = s.record()["summary"]
    assert rec["faces"] == 2 and rec["frames"] == 3 and rec["face_frames"] == 5
    assert rec["tracks"]["1"] == {"frames": 3, "label": "happiness", "labels": {"happiness": 2, "neutral": 1}}
    assert rec["labels"] == {"happiness": 1, "neutral": 1} and rec["frame_labels"] == {"neutral": 3, "happiness": 2}
    assert s.line().startswith("clip.mp4: 2 tracked faces over 3 frames: 1 happiness, 1 neutral; #1 happiness")
