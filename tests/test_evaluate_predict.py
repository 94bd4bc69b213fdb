"""evaluate (metrics against hand-computed values), predict (real photo, tiny faces, pipelines) and export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import ASTRONAUT, REPO, YUNET, json_lines

from gmenet_cli import checkpoint
from gmenet_cli.data.store import Store
from gmenet_cli.evaluate import confusion, metrics_from_confusion


def test_metrics_match_hand_computed_values():
    # truth/prediction counts: rows = true class
    conf = np.array([[3, 1, 0],
                     [0, 2, 2],
                     [0, 0, 0]])  # class c never occurs in the truth but is predicted twice
    m = metrics_from_confusion(conf, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["mean_class_accuracy"] == pytest.approx((3 / 4 + 2 / 4) / 2)  # classes present in the truth
    p_a, r_a = 3 / 3, 3 / 4
    p_b, r_b = 2 / 3, 2 / 4
    f_a, f_b = 2 * p_a * r_a / (p_a + r_a), 2 * p_b * r_b / (p_b + r_b)
    assert m["per_class"]["a"] == pytest.approx({"precision": p_a, "recall": r_a, "f1": f_a, "support": 4})
    assert m["per_class"]["b"] == pytest.approx({"precision": p_b, "recall": r_b, "f1": f_b, "support": 4})
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx((f_a + f_b + 0.0) / 3)  # sklearn: labels in truth or predictions
    # a predicted-but-absent class counts in macro-F1 with F1 0 (precision 0)
    conf2 = np.array([[1, 1], [0, 0]])
    assert metrics_from_confusion(conf2, ["a", "b"])["macro_f1"] == pytest.approx((2 * 1 * 0.5 / 1.5 + 0) / 2)


def test_evaluate_json_agrees_with_running_the_model(tiny_store, tiny_runs, cli, workdir):
    res = cli("evaluate", "--weights", tiny_runs["student"], "--compare", tiny_runs["teacher"], "--data", tiny_store,
              "--split", "val", "--scales", "1,2,4", "--out", workdir / "ev", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert [r["view"] for r in report["models"][0]["results"]] == ["hr", "x2", "x4"]
    assert [m["model"] for m in report["models"]] == ["gmenet_t", "teacher_t"]
    # recompute x4 accuracy of the student by hand: flip TTA (on by default) = mean logits of face and mirror
    ck = checkpoint.load(tiny_runs["student"])
    model = checkpoint.build_model(ck)
    split = Store(tiny_store).split("val")
    faces = torch.from_numpy(np.array(split.lowres[4]))
    with torch.no_grad():
        pred = ((model(faces) + model(faces.flip(-1))) / 2).argmax(1).numpy()
        plain = model(faces).argmax(1).numpy()
    x4 = report["models"][0]["results"][2]
    assert report["tta"] is True
    assert x4["accuracy"] == pytest.approx(float((pred == split.labels).mean()))
    assert np.array_equal(np.asarray(x4["confusion"]), confusion(model, split, 4, "cpu", tta=True))
    res = cli("evaluate", "--weights", tiny_runs["student"], "--data", tiny_store, "--split", "val", "--scales", "4",
              "--out", workdir / "ev2", "--json", "--no-tta")
    no_tta = json.loads(res.stdout)["models"][0]["results"][0]
    assert no_tta["accuracy"] == pytest.approx(float((plain == split.labels).mean()))
    assert np.array_equal(np.asarray(no_tta["confusion"]), confusion(model, split, 4, "cpu"))
    for name in ("metrics.json", "confusion_matrix.png", "resolution_sweep.png"):
        assert (workdir / "ev" / name).is_file()


def test_evaluate_reads_onnx_exports_and_the_shipped_one_size_models(tiny_store, tiny_runs, cli, workdir):
    """An exported .onnx is evaluated through onnxruntime as predict runs it: the same confusion matrices as its
    checkpoint at every trained size (float rounding aside), side by side with --compare; the shipped one-size
    models answer to their names."""
    import shutil

    pt = workdir / "student.pt"
    shutil.copy(tiny_runs["student"], pt)
    assert cli("export", "--weights", pt).exit_code == 0
    args = ("--data", tiny_store, "--split", "val", "--scales", "2,4", "--json")
    ref = json.loads(cli("evaluate", "--weights", pt, *args, "--out", workdir / "a").stdout)
    res = cli("evaluate", "--weights", pt.with_suffix(".onnx"), "--compare", pt, *args, "--out", workdir / "b")
    assert res.exit_code == 0, res.output
    onnx_report = json.loads(res.stdout)
    mine, theirs = onnx_report["models"][0], ref["models"][0]
    assert mine["kind"] == "student" and mine["trained_scales"] == [2, 4] and mine["params"] is None
    for a, b in zip(mine["results"], theirs["results"]):
        assert a["face_px"] == b["face_px"] and np.array_equal(a["confusion"], b["confusion"])
        assert a["ece"] == pytest.approx(b["ece"], abs=1e-3)
    assert onnx_report["models"][1]["results"][0]["confusion"] == theirs["results"][0]["confusion"]
    res = cli("evaluate", "--weights", "default-7px", *args)
    assert res.exit_code == 2 and "no shipped model named default-7px" in res.stderr
    assert "default-12px" in res.stderr


def test_evaluate_refuses_mismatched_data(tiny_runs, cli, workdir, tmp_path):
    import synth

    root = synth.make_folder(tmp_path / "f", names=("happy", "sad"))
    assert cli("prepare", "--src", "folder", "--root", root, "--scale", "4", "--hr-size", "48", "--out", tmp_path / "s",
               "--channels", "1").exit_code == 0
    res = cli("evaluate", "--weights", tiny_runs["student"], "--data", tmp_path / "s")
    assert res.exit_code == 1 and "predicts classes" in res.stderr
    res = cli("evaluate", "--weights", tmp_path / "missing.pt")  # a missing file is a usage error (2), as everywhere
    assert res.exit_code == 2 and "checkpoint not found" in res.stderr


def _downscale(src: Path, dst: Path, face_px: int) -> Path:
    img = cv2.imread(str(src))
    f = face_px / 100.0  # the astronaut's face is about 100 px wide (YuNet: 92 x 112)
    cv2.imwrite(str(dst), cv2.resize(img, None, fx=f, fy=f, interpolation=cv2.INTER_AREA))
    return dst


@pytest.mark.parametrize("detector", ["haar", "yunet"])
def test_predict_finds_the_astronaut_face_at_full_and_tiny_sizes(tiny_runs, cli, workdir, detector):
    paths = [ASTRONAUT, _downscale(ASTRONAUT, workdir / "a24.png", 24), _downscale(ASTRONAUT, workdir / "a16.png", 16)]
    for path in paths:
        res = cli(
            "predict",
            path,
            "--weights",
            tiny_runs["student"],
            "--detector",
            detector,
            "--detector-model",
            YUNET,
            "--json",
        )
        assert res.exit_code == 0, (path, res.output)
        faces = json_lines(res.stdout)
        assert len(faces) == 1, faces
        x, y, w, h = faces[0]["box"]
        img_w = cv2.imread(str(path)).shape[1]
        # the face centre lies where YuNet puts it on the full photo (about x 224, y 118 of 512)
        assert abs((x + w / 2) / img_w - 224 / 512) < 0.06 and abs((y + h / 2) / img_w - 118 / 512) < 0.06
        assert set(faces[0]["probs"]) == set(checkpoint.load(tiny_runs["student"])["classes"])
        crop = max(w, h) * 1.2  # the default --margin 0.1 on each side: the crop the model reads
        assert faces[0]["input_px"] == (24 if crop >= 23.5 else 12), (crop, faces[0])


def test_predict_stdin_mixed_directory_and_exit_codes(tiny_runs, cli, workdir):
    d = workdir / "photos"
    d.mkdir()
    shutil.copy(ASTRONAUT, d / "good.png")
    _downscale(ASTRONAUT, d / "small.jpg", 24)
    (d / "notes.txt").write_text("not an image")
    data = (d / "small.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "empty.jpg").write_bytes(b"")
    (d / "dir.jpg").mkdir()
    res = cli("predict", d, "--weights", tiny_runs["student"], "--json")
    assert res.exit_code == 1  # some inputs unreadable; the rest processed
    lines = json_lines(res.stdout)
    assert {Path(r["file"]).name for r in lines if "label" in r} == {"good.png", "small.jpg"}
    for bad in ("empty.jpg", "dir.jpg"):
        assert bad in res.stderr
    assert "truncated.jpg" in res.stdout + res.stderr  # truncated JPEGs may still decode partially
    assert "notes.txt" in res.stderr
    assert "Traceback" not in res.output
    # stdin: one path per line, exit 0 when every input has a face
    res = cli(
        "predict", "-", "--weights", tiny_runs["student"], "--json", input=f"{d / 'good.png'}\n{d / 'small.jpg'}\n"
    )
    assert res.exit_code == 0, res.output
    assert len(json_lines(res.stdout)) == 2 and all("label" in r for r in json_lines(res.stdout))


def test_predict_no_face_no_detect_csv_and_save(tiny_runs, cli, workdir):
    blank = workdir / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 160, 3), 128, np.uint8))
    res = cli("predict", blank, "--weights", tiny_runs["student"], "--json", "--summary")
    assert res.exit_code == 1
    assert json_lines(res.stdout) == [{"file": str(blank), "faces": 0, "note": json_lines(res.stdout)[0]["note"]}]
    assert "no face found" in res.stderr
    res = cli("predict", blank, "--weights", tiny_runs["student"], "--no-detect", "--csv")
    assert res.exit_code == 0
    header, row = res.stdout.strip().splitlines()
    assert header.startswith("file,frame,face,x,y,w,h,label,confidence")
    assert row.split(",")[0] == str(blank)
    res = cli("predict", ASTRONAUT, "--weights", tiny_runs["student"], "--save", workdir / "out")
    assert res.exit_code == 0 and (workdir / "out" / "astronaut.jpg").is_file()
    (face,) = json_lines(cli("predict", ASTRONAUT, "--weights", tiny_runs["student"], "--json").stdout)
    row = next(line for line in res.stdout.splitlines() if "astronaut.png" in line and "│" in line)
    assert face["label"] in row and f"{face['confidence']:.3f}" in row  # the face's row of the table on stdout


def test_predict_boxes_csv_and_usage_errors(tiny_runs, cli, workdir):
    boxes = workdir / "boxes.csv"
    boxes.write_text(f"file,x,y,w,h\n{ASTRONAUT},176,66,96,96\n")
    res = cli("predict", ASTRONAUT, "--weights", tiny_runs["student"], "--boxes", boxes, "--json")
    assert res.exit_code == 0
    (face,) = json_lines(res.stdout)
    assert face["box"] == [176.0, 66.0, 96.0, 96.0]
    assert cli("predict", ASTRONAUT, "--weights", tiny_runs["student"], "--json", "--csv").exit_code == 2
    # YuNet ships with gmenet (issue 15): a --detector-model that does not exist is the usage error now
    res = cli("predict", ASTRONAUT, "--weights", tiny_runs["student"], "--detector-model", workdir / "nope.onnx")
    assert res.exit_code == 2 and "detector model not found" in res.stderr
    garbage = workdir / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    for model, says in ((garbage, "is not a YuNet ONNX model onnxruntime can load"),
                        (REPO / "gmenet_cli" / "weights" / "default.onnx", "is not a YuNet face detector")):
        res = cli("predict", ASTRONAUT, "--weights", tiny_runs["student"], "--detector-model", model)
        assert res.exit_code == 2 and says in res.stderr and "Traceback" not in res.stderr + res.stdout
    res = cli("predict", ASTRONAUT, "--weights", tiny_runs["teacher"].parent / "nope.pt")
    assert res.exit_code == 2 and "checkpoint not found" in res.stderr  # not 1, which means "no face found"


def test_predict_video_every_n_frames(tiny_runs, cli, workdir):
    path = workdir / "clip.avi"
    img = cv2.resize(cv2.imread(str(ASTRONAUT)), (256, 256))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (256, 256))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for _ in range(6):
        writer.write(img)
    writer.release()
    res = cli("predict", path, "--weights", tiny_runs["student"], "--every", "3", "--json")
    assert res.exit_code == 0, res.output
    assert [r["frame"] for r in json_lines(res.stdout)] == [0, 3]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_parity(tiny_runs, cli, workdir, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    for key, sizes in (("student", [12, 24]), ("teacher", [48])):
        out = workdir / f"{key}.{fmt}"
        res = cli("export", "--weights", tiny_runs[key], "--format", fmt, "--out", out, "--json")
        assert res.exit_code == 0, res.output
        info = json.loads(res.stdout)
        # one graph checked at every size the model was trained on (x2 and x4 of 48 for the student)
        assert info["checked_sizes"] == sizes
        assert info["max_abs_diff"] < 1e-4 and out.is_file()


def test_export_half_weights_halves_the_onnx_file_and_computes_in_float32(tiny_runs, cli, workdir):
    onnx = pytest.importorskip("onnx")
    student = tiny_runs["student"]
    full, half = workdir / "full.onnx", workdir / "half.onnx"
    assert cli("export", "--weights", student, "--out", full).exit_code == 0
    res = cli("export", "--weights", student, "--out", half, "--half-weights", "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["weights_dtype"] == "float16" and info["max_abs_diff"] < 1e-4
    # the weights take half the bytes (the metadata, the same in both, is most of a tiny model's rest)
    meta = sum(len(p.value) for p in onnx.load(str(full)).metadata_props)
    assert half.stat().st_size - meta < 0.6 * (full.stat().st_size - meta)
    graph = onnx.load(str(half)).graph
    import numpy

    big = [i for i in graph.initializer if numpy.prod(i.dims) >= 16]  # smaller ones are not worth a Cast
    assert big and {i.data_type for i in big} == {onnx.TensorProto.FLOAT16}
    assert graph.node[0].op_type == "Cast"  # weights go back to float32 before any compute
    # it runs like the checkpoint in predict (weights rounded to float16: probabilities within 1e-3)
    ref = json_lines(cli("predict", ASTRONAUT, "--weights", student, "--json").stdout)
    got = json_lines(cli("predict", ASTRONAUT, "--weights", half, "--json").stdout)
    assert [g["label"] for g in got] == [r["label"] for r in ref]
    assert max(abs(got[0]["probs"][c] - ref[0]["probs"][c]) for c in ref[0]["probs"]) <= 1e-3
    assert cli("export", "--weights", student, "--format", "torchscript", "--half-weights").exit_code == 2


def test_export_int8_weights_quarters_the_weights_and_rebuilds_the_same_model(tiny_runs, cli, workdir):
    onnx = pytest.importorskip("onnx")
    import numpy

    from gmenet_cli import checkpoint
    from gmenet_cli.export import dequantize, quantizable, quantize_per_channel
    from gmenet_cli.ortmodel import OnnxModel

    student = tiny_runs["student"]
    full, small = workdir / "full8.onnx", workdir / "int8.onnx"
    assert cli("export", "--weights", student, "--out", full).exit_code == 0
    res = cli("export", "--weights", student, "--out", small, "--int8-weights", "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["weights_dtype"].startswith("int8") and info["max_abs_diff"] < 1e-4
    graph = onnx.load(str(small)).graph
    int8 = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and i.name.endswith("__int8")]
    # each int8 weight goes back to float32 through its DequantizeLinear, before any compute
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert int8 and len(dq) == len(int8) and {n.input[0] for n in dq} == {i.name for i in int8}
    kinds = [n.op_type for n in graph.node]
    first_compute = next(i for i, k in enumerate(kinds) if k not in ("Cast", "DequantizeLinear"))
    assert kinds[first_compute:].count("DequantizeLinear") == 0
    # what is quantized is most of the weights, and the file's tensors shrink to well under half of float32
    floats = lambda g: sum(numpy.prod(i.dims) * (4 if i.data_type == 1 else 2 if i.data_type == 10 else 1)  # noqa: E731
                           for i in g.initializer)
    assert floats(graph) < 0.4 * floats(onnx.load(str(full)).graph)
    # the file rebuilds the model the parity check ran: float16-rounded, then int8 per output channel
    want, got = checkpoint.load(student)["state_dict"], checkpoint.load(small)["state_dict"]
    n = 0
    for k, v in want.items():
        ref = v.half().float() if v.is_floating_point() else v
        if quantizable(ref):
            ref, n = dequantize(*quantize_per_channel(ref)), n + 1
        assert torch.equal(got[k].to(ref.dtype), ref), k
    assert n == len(int8)
    # onnxruntime folds the dequantization into float32 constants once, at load
    model = OnnxModel(small)
    assert model.session.get_session_options().get_session_config_entry("session.disable_quant_qdq") == "1"
    ref = json_lines(cli("predict", ASTRONAUT, "--weights", student, "--json").stdout)
    got = json_lines(cli("predict", ASTRONAUT, "--weights", small, "--json").stdout)
    assert [g["label"] for g in got] == [r["label"] for r in ref]
    assert max(abs(got[0]["probs"][c] - ref[0]["probs"][c]) for c in ref[0]["probs"]) <= 2e-2
    for bad in (("--half-weights", "--int8-weights"), ("--format", "torchscript", "--int8-weights")):
        res = cli("export", "--weights", student, "--out", workdir / "x.onnx", *bad)
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_int8_quantization_is_per_output_channel_and_symmetric():
    from gmenet_cli.export import dequantize, quantizable, quantize_per_channel

    w = torch.randn(4, 16, 3, 3)
    w[2] = 0  # an all-zero channel stays zero, with a finite scale
    w[1] *= 100
    q, scale = quantize_per_channel(w)
    assert q.dtype.name == "int8" and scale.shape == (4,) and abs(q).max() == 127
    back = dequantize(q, scale)
    assert torch.equal(back[2], torch.zeros_like(back[2]))
    for c in (0, 1, 3):  # each channel within half a step of its own scale
        assert (back[c] - w[c]).abs().max() <= scale[c] / 2 + 1e-6
    assert quantizable(w) and not quantizable(torch.randn(32, 1, 7, 7)) and not quantizable(torch.randn(32))


def test_numpy_bicubic_matches_torch():
    """The ONNX path resizes faces in numpy; it must be torch's bicubic (align_corners=False, clamped)."""
    import torch.nn.functional as F

    from gmenet_cli.ortmodel import upsample

    rng = np.random.default_rng(0)
    for n_in, n_out in ((6, 48), (12, 48), (24, 48), (5, 48), (7, 13), (48, 48)):
        x = rng.random((3, 2, n_in, n_in), dtype=np.float32)
        ref = F.interpolate(torch.from_numpy(x), size=(n_out, n_out), mode="bicubic", align_corners=False).clamp(0, 1)
        assert np.abs(upsample(x, n_out) - ref.numpy()).max() < 1e-5, (n_in, n_out)


def test_predict_runs_onnx_exports_like_the_checkpoint(tiny_runs, cli, workdir):
    """`predict --weights x.onnx` (dynamic and fixed-size graphs) gives the checkpoint's probabilities."""
    pytest.importorskip("onnx")
    student = tiny_runs["student"]
    assert cli("export", "--weights", student, "--out", workdir / "dyn.onnx").exit_code == 0
    assert cli("export", "--weights", student, "--out", workdir / "fixed.onnx", "--input-size", "48").exit_code == 0
    paths = [ASTRONAUT, _downscale(ASTRONAUT, workdir / "a16.png", 16)]
    ref = json_lines(cli("predict", *paths, "--weights", student, "--json").stdout)
    assert [r["input_px"] for r in ref] == [24, 12]
    # a graph fixed at one LR size takes every face at that size
    assert cli("export", "--weights", student, "--out", workdir / "x4.onnx", "--input-size", "12").exit_code == 0
    res = cli("predict", *paths, "--weights", workdir / "x4.onnx", "--json")
    assert res.exit_code == 0, res.output
    assert [r["input_px"] for r in json_lines(res.stdout)] == [12, 12]
    for graph in ("dyn.onnx", "fixed.onnx"):
        res = cli("predict", *paths, "--weights", workdir / graph, "--json")
        assert res.exit_code == 0, res.output
        got = json_lines(res.stdout)
        assert [r["label"] for r in got] == [r["label"] for r in ref]
        for g, r in zip(got, ref):
            assert g["input_px"] == r["input_px"]
            assert max(abs(g["probs"][c] - r["probs"][c]) for c in r["probs"]) <= 2e-4, graph


def test_predict_refuses_bad_onnx_files(tiny_runs, cli, workdir, monkeypatch):
    onnx = pytest.importorskip("onnx")
    garbage = workdir / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf at all" * 10)
    res = cli("predict", ASTRONAUT, "--weights", garbage)
    assert res.exit_code == 2 and "not a loadable ONNX model" in res.stderr and "Traceback" not in res.output
    assert cli("export", "--weights", tiny_runs["student"], "--out", workdir / "s.onnx").exit_code == 0
    proto = onnx.load(str(workdir / "s.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(workdir / "bare.onnx"))
    res = cli("predict", ASTRONAUT, "--weights", workdir / "bare.onnx")
    assert res.exit_code == 2 and "without gmenet metadata" in res.stderr
    # --device cuda rebuilds a gmenet export in PyTorch (the checkpoint it carries); a bare graph cannot be
    from gmenet_cli.predict import classify

    monkeypatch.setattr(classify, "onnxruntime_available", lambda: False)  # the PyTorch path, on any machine
    res = cli("predict", ASTRONAUT, "--weights", workdir / "bare.onnx", "--no-detect")
    assert res.exit_code == 2 and "carries no checkpoint" in res.stderr and "install onnxruntime" in res.stderr
    assert "Traceback" not in res.output
    res = cli("predict", ASTRONAUT, "--weights", workdir / "s.onnx", "--no-detect", "--json")
    assert res.exit_code == 0 and json_lines(res.stdout)[0]["label"]
    monkeypatch.undo()
    res = cli("predict", ASTRONAUT, "--weights", workdir / "s.onnx", "--device", "gpu")
    assert res.exit_code == 2 and "--device must be" in res.stderr
    res = cli("predict", ASTRONAUT, "--weights", workdir / "missing.onnx")
    assert res.exit_code == 2 and "not found" in res.stderr


def test_shipped_default_model_reads_the_example_photo(cli, workdir):
    """The README's first command: no options, the model inside the package, the astronaut smiles."""
    from gmenet_cli import checkpoint
    from gmenet_cli.predict import DEFAULT_ONNX

    if not DEFAULT_ONNX.is_file():
        pytest.skip("no default model in this checkout")
    assert DEFAULT_ONNX.stat().st_size <= 10e6
    res = cli("predict", ASTRONAUT, "--json")
    assert res.exit_code == 0, res.output
    (face,) = json_lines(res.stdout)
    assert face["label"] == "happiness"
    # a 110 px face: the 48 px model where one ships, else the all-sizes model's largest size (x2 of 48)
    big = DEFAULT_ONNX.parent / "default-48px.onnx"
    assert face["input_px"] == (48 if big.is_file() else 24)
    # onnxruntime (the default backend) and PyTorch rebuilding the model from the same file (what --device
    # cuda and train --init default use) agree (a 30 px crop: read at 24)
    ckpt = checkpoint.load(DEFAULT_ONNX)
    assert ckpt["model"]["name"] == "gmenet_s2" and ckpt["calibration"]["method"] == "class-temperature"
    from gmenet_cli.predict import classify

    face30 = cv2.resize(cv2.imread(str(ASTRONAUT))[40:200, 150:310], (30, 30), interpolation=cv2.INTER_AREA)
    crop = cv2.resize(cv2.cvtColor(face30, cv2.COLOR_BGR2GRAY), (24, 24), interpolation=cv2.INTER_AREA)[None]
    ort_clf = classify.OnnxClassifier(str(DEFAULT_ONNX))
    torch_clf = classify.TorchClassifier(str(DEFAULT_ONNX), torch.device("cpu"))
    assert ort_clf.input_size(30) == torch_clf.input_size(30) == 24 and ort_clf.classes == torch_clf.classes
    np.testing.assert_allclose(ort_clf.classify([crop]), torch_clf.classify([crop]), atol=2e-4)


def test_shipped_weights_fit_the_package_budget():
    """Every shipped model file together (the classifiers and YuNet) within 25 MB (issue 24)."""
    from gmenet_cli.predict.classify import WEIGHTS_DIR

    files = [p for p in WEIGHTS_DIR.iterdir() if p.suffix in (".pt", ".onnx")]
    assert sum(p.stat().st_size for p in files) <= 25e6, {p.name: p.stat().st_size for p in files}


def test_shipped_one_size_models_take_the_faces_of_their_size(cli, workdir, monkeypatch):
    """Any default-<N>px model shipped beside the default: an N px face goes to it, through onnxruntime and
    through PyTorch (--device cuda, or no onnxruntime) alike."""
    from gmenet_cli.predict.classify import WEIGHTS_DIR, default_files

    specialists = default_files()[1:]
    if not specialists:
        pytest.skip("no one-size model ships in this checkout")
    assert not list(WEIGHTS_DIR.glob("*.pt"))  # every model ships once, as .onnx carrying its checkpoint
    face = cv2.imread(str(ASTRONAUT))[40:200, 150:310]
    sized = [(int(p.stem.split("-")[1][:-2]), p) for p in specialists]  # default-<px>px.onnx
    crops = {}
    for px, onnx_file in sized:
        assert onnx_file.stat().st_size <= 10e6
        small = cv2.resize(face, (px + 2, px + 2), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(workdir / "f.png"), small)
        crops[px] = cv2.resize(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), (px, px), interpolation=cv2.INTER_AREA)[None]
        res = cli("predict", workdir / "f.png", "--no-detect", "--json")
        assert "warning" not in res.stderr, res.stderr  # the shipped set as designed: nothing to warn about
        (got,) = json_lines(res.stdout)
        (ref,) = json_lines(cli("predict", workdir / "f.png", "--no-detect", "--json", "--weights", onnx_file).stdout)
        (main,) = json_lines(
            cli("predict", workdir / "f.png", "--no-detect", "--json", "--weights", WEIGHTS_DIR / "default.onnx").stdout
        )
        assert got["input_px"] == px and got["probs"] == ref["probs"] and got["probs"] != main["probs"]

    # without onnxruntime (and with --device cuda) PyTorch runs the same files, routed the same way
    from gmenet_cli.predict import classify

    ort_clf = classify.load_classifier(None, "cpu")
    monkeypatch.setattr(classify, "onnxruntime_available", lambda: False)
    clf = classify.load_classifier(None, "cpu")
    assert clf.backend == "torch" and [Path(m.path).name for m in clf.members] == [p.name for p in default_files()]
    for px, onnx_file in sized:
        assert Path(clf.route[px].path).name == onnx_file.name
        np.testing.assert_allclose(clf.classify([crops[px]]), ort_clf.classify([crops[px]]), atol=2e-4)
        assert clf.route[px].model.backend == "torch"


def test_default_predict_does_not_import_torch():
    """Start-up: the default path (shipped ONNX + onnxruntime) must not pay for `import torch` (2-3 s)."""
    import subprocess
    import sys

    code = (
        "import sys; from gmenet_cli.cli import main; sys.argv = ['gmenet', 'predict', sys.argv[1], '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "bad = sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules)\n"
        "assert not bad, bad"
    )
    res = subprocess.run([sys.executable, "-c", code, str(ASTRONAUT)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.splitlines()[0])["label"] == "happiness"


def test_predict_sends_each_face_size_to_the_model_trained_at_it(tiny_runs, cli, workdir):
    """Several --weights: a face goes to the model trained at its input size, a one-size model before an
    all-sizes one; the result is what that model alone gives."""
    student, teacher = tiny_runs["student"], tiny_runs["teacher"]  # LR sizes 12 and 24; HR size 48
    face = cv2.imread(str(ASTRONAUT))[40:200, 150:310]
    for px in (20, 30, 64):
        cv2.imwrite(str(workdir / f"face{px}.png"), cv2.resize(face, (px, px), interpolation=cv2.INTER_AREA))
    files = [workdir / f"face{px}.png" for px in (20, 30, 64)]
    both = json_lines(
        cli("predict", *files, "--no-detect", "--json", "--weights", student, "--weights", teacher).stdout
    )
    alone_s = json_lines(cli("predict", *files, "--no-detect", "--json", "--weights", student).stdout)
    alone_t = json_lines(cli("predict", *files, "--no-detect", "--json", "--weights", teacher).stdout)
    assert [r["input_px"] for r in both] == [12, 24, 48]
    for got, ref in zip(both, [alone_s[0], alone_s[1], alone_t[2]]):
        assert got["probs"] == ref["probs"]
    assert both[2]["probs"] != alone_s[2]["probs"]  # the 64 px face did go to the teacher
    twice = cli("predict", files[0], "--no-detect", "--json", "--weights", student, "--weights", student)
    assert twice.exit_code == 0 and "is not used" in twice.stderr


def test_routing_prefers_the_one_size_model_and_refuses_other_classes():
    from gmenet_cli.errors import UsageError
    from gmenet_cli.predict.classify import Classifier, RoutedClassifier

    class Fake(Classifier):
        backend = "fake"

        def __init__(self, path, sizes, classes=("a", "b")):
            self.path, self.sizes, self.classes, self.channels = path, sizes, list(classes), 1

        def logits(self, x):
            return np.tile(np.array([[float(self.path == "one"), 0.0]]), (len(x), 1))

    all_sizes, one = Fake("all", [6, 12, 24]), Fake("one", [12])
    for members in ([all_sizes, one], [one, all_sizes]):
        clf = RoutedClassifier(members)
        assert clf.sizes == [6, 12, 24] and clf.route[12] is one and clf.route[6] is all_sizes
        crop = lambda s: np.zeros((1, s, s), np.uint8)  # noqa: E731
        assert clf.classify([crop(12)])[0, 0] > 0.7 and clf.classify([crop(24)])[0, 0] == pytest.approx(0.5)
    with pytest.raises(UsageError, match="share one class list"):
        RoutedClassifier([all_sizes, Fake("x", [12], ("a", "c"))])


def test_detected_faces_are_routed_by_the_crop_the_model_reads(tiny_runs, cli, workdir, monkeypatch):
    """A detector box of 21.6 px is a 26 px crop with the default --margin 0.1: read at 24 px, not 12; with
    --margin 0 the same box is read at 12 px (the student's trained sizes are 12 and 24)."""
    from gmenet_cli.predict import pipeline

    monkeypatch.setattr(pipeline, "detect_faces", lambda det, img: [(30.0, 30.0, 21.6, 21.6, 0.9)])
    cv2.imwrite(
        str(workdir / "scene.png"), cv2.resize(cv2.imread(str(ASTRONAUT)), (100, 100), interpolation=cv2.INTER_AREA)
    )
    rows = {}
    for margin in ("0.1", "0"):
        res = cli("predict", workdir / "scene.png", "--json", "--weights", tiny_runs["student"], "--margin", margin)
        assert res.exit_code == 0, res.output
        (rows[margin],) = json_lines(res.stdout)
    assert rows["0.1"]["face_px"] == rows["0"]["face_px"] == 21.6
    assert rows["0.1"]["input_px"] == 24 and rows["0"]["input_px"] == 12


def test_shipped_models_load_only_when_a_face_of_their_size_comes():
    """Every shipped model, default.onnx included, is described by its metadata at start-up (read without an
    onnxruntime session) and gets its session only when a face of its size is classified."""
    pytest.importorskip("onnxruntime")
    from gmenet_cli.ortmodel import OnnxModel, read_metadata
    from gmenet_cli.predict.classify import LazyClassifier, default_files, load_classifier

    if len(default_files()) < 2:
        pytest.skip("no one-size model ships in this checkout")
    main = default_files()[0]
    assert read_metadata(main) == OnnxModel(main).session.get_modelmeta().custom_metadata_map
    clf = load_classifier(None)
    lazy = [m for m in clf.members if isinstance(m, LazyClassifier)]
    assert len(lazy) == len(clf.members) == len(default_files()) and not any(m.loaded for m in lazy)
    px = lazy[1].sizes[0]
    others = [s for s in clf.sizes if s != px]
    clf.classify([np.zeros((1, others[-1], others[-1]), np.uint8)])
    assert not lazy[1].loaded and not lazy[0].loaded  # a face of another size loads only its own model
    clf.classify([np.zeros((1, px, px), np.uint8)])
    assert lazy[1].loaded and clf.route[px] is lazy[1]
    smallest = min(clf.sizes)
    clf.classify([np.zeros((1, smallest, smallest), np.uint8)])
    assert clf.route[smallest].loaded
    assert clf.classes == OnnxModel(main).classes


def test_onnx_metadata_reader_refuses_what_is_not_onnx(tmp_path):
    from gmenet_cli.ortmodel import read_metadata
    from gmenet_cli.predict.classify import DEFAULT_ONNX

    data = DEFAULT_ONNX.read_bytes()
    for name, body in (("text.onnx", b"not a model at all"), ("cut.onnx", data[: len(data) // 2])):
        (tmp_path / name).write_bytes(body)
        with pytest.raises(ValueError):
            read_metadata(tmp_path / name)


def test_default_files_and_onnx_checkpoints(tmp_path, monkeypatch, tiny_runs, tiny_store, cli):
    """The shipped files predict runs: default.onnx, then the one-size models by size. A gmenet .onnx export
    carries its checkpoint: PyTorch rebuilds the same tensors from it (train --init, evaluate, --device cuda);
    an export without that entry is refused in one line."""
    import onnx

    from gmenet_cli import checkpoint
    from gmenet_cli.predict import classify

    for name in ("default.onnx", "default-24px.onnx", "default-12px.onnx", "default-48px.onnx", "other.onnx"):
        (tmp_path / name).touch()
    monkeypatch.setattr(classify, "WEIGHTS_DIR", tmp_path)
    assert [p.name for p in classify.default_files()] == [
        "default.onnx", "default-12px.onnx", "default-24px.onnx", "default-48px.onnx"]

    out = tmp_path / "s.onnx"
    assert cli("export", "--weights", tiny_runs["student"], "--out", out, "--half-weights").exit_code == 0
    want, got = checkpoint.load(tiny_runs["student"]), checkpoint.load(out)
    assert list(got["state_dict"]) == list(want["state_dict"])
    for k, v in want["state_dict"].items():
        ref = v.half() if v.is_floating_point() else v
        assert torch.equal(got["state_dict"][k], ref), k
    assert got["model"] == want["model"] and got["input"] == want["input"] and got["classes"] == want["classes"]
    proto = onnx.load(str(out))
    keep = [p for p in proto.metadata_props if p.key != checkpoint.ONNX_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    onnx.save(proto, str(tmp_path / "old.onnx"))
    with pytest.raises(checkpoint.CheckpointError, match="without the checkpoint in its metadata"):
        checkpoint.load(tmp_path / "old.onnx")
    proto.metadata_props.add(key=checkpoint.ONNX_KEY, value="{not json")
    onnx.save(proto, str(tmp_path / "damaged.onnx"))
    with pytest.raises(checkpoint.CheckpointError, match="checkpoint metadata is damaged"):
        checkpoint.load(tmp_path / "damaged.onnx")
    # an export of an .onnx needs somewhere else to go; calibrate rewrites .pt checkpoints only
    res = cli("export", "--weights", out)
    assert res.exit_code == 2 and "would write over it; pass --out" in res.stderr
    res = cli("calibrate", "--weights", out, "--data", tiny_store)
    assert res.exit_code == 2 and "calibrate rewrites a .pt checkpoint" in res.stderr
    res = cli("calibrate", "--weights", "default")
    assert res.exit_code == 2 and "calibrated already" in res.stderr


def test_cross_eval_scores_a_labelled_folder_and_writes_per_file_rows(tmp_path):
    """benchmarks/cross_eval.py on a synthetic <class>/*.png folder with the shipped models: the counts, the
    per-file CSV and the JSON agree with each other, and a folder named after no class is refused."""
    import csv
    import importlib.util

    import synth

    spec = importlib.util.spec_from_file_location("cross_eval", REPO / "benchmarks" / "cross_eval.py")
    cross_eval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cross_eval)
    root = synth.make_folder(tmp_path / "faces", per_class=3, names=("anger", "happiness", "neutral"))
    out, rows = tmp_path / "r.json", tmp_path / "rows.csv"
    assert cross_eval.main([str(root), "--sizes", "full,12", "--min-count", "3", "--no-tta",
                            "--json", str(out), "--per-file", str(rows)]) == 0
    report = json.loads(out.read_text())
    assert report["scored_classes"] == ["neutral", "happiness", "anger"]  # the model's class order
    table = list(csv.DictReader(rows.open()))
    assert len(table) == 2 * 9 and {r["size"] for r in table} == {"full", "12"}
    for size, r in report["sizes"].items():
        mine = [t for t in table if t["size"] == size]
        assert r["faces"] == 9
        assert r["accuracy"] == pytest.approx(sum(t["label"] == t["truth"] for t in mine) / 9)
        for c in report["scored_classes"]:
            of_c = [t for t in mine if t["truth"] == c]
            assert r["recall"][c] == pytest.approx(sum(t["label"] == c for t in of_c) / len(of_c))
        assert all(0 < float(t["confidence"]) <= 1 for t in mine)
    # --only / --skip pick files by name (synth names them subj{k % 3}_{class}_{k}.png)
    assert cross_eval.main([str(root), "--sizes", "full", "--min-count", "1", "--only", "_0[.]png$",
                            "--per-file", str(rows), "--no-tta"]) == 0
    assert sorted(Path(t["file"]).name for t in csv.DictReader(rows.open())) == [
        "subj0_anger_0.png", "subj0_happiness_0.png", "subj0_neutral_0.png"]
    assert cross_eval.main([str(root), "--sizes", "full", "--min-count", "1", "--skip", "^subj[01]_",
                            "--per-file", str(rows), "--no-tta"]) == 0
    assert len(list(csv.DictReader(rows.open()))) == 3
    with pytest.raises(SystemExit, match="no image left"):
        cross_eval.main([str(root), "--only", "nothing-matches-this"])
    (root / "bored").mkdir()
    with pytest.raises(SystemExit, match="not one of the model's classes"):
        cross_eval.main([str(root), "--sizes", "full"])
