"""Model core: every registered model, the teacher/student map contract, A-SKD, ablation switches."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F

from gmenet_cli.errors import UsageError
from gmenet_cli.losses import ASKDLoss, ClassificationLoss, map_similarity_loss
from gmenet_cli.models import count_flops, count_params, create_model, get_spec, list_models
from gmenet_cli.tasks import DistillTask

SMALL = dict(num_classes=5, input_size=32)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_forward_backward_every_model(name, in_chans):
    torch.manual_seed(0)
    size = 16 if name.endswith("_m") else 32  # keep the GPU-sized models quick on CPU
    model = create_model(name, in_chans=in_chans, num_classes=5, input_size=size)
    x = torch.rand(3, in_chans, 8, 8)  # a tiny LR face: resized inside the model
    logits, maps = model(x, return_maps=True)
    assert logits.shape == (3, 5)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    for c_map, s_map in maps:
        assert c_map.shape[:2] == (3, c_map.shape[1]) and c_map.shape[2:] == (1, 1)
        assert s_map.shape[1] == 1
    assert model(torch.randint(0, 256, (2, in_chans, size, size), dtype=torch.uint8)).shape == (2, 5)


@pytest.mark.parametrize("size", ["t", "s", "m"])
def test_teacher_and_student_maps_pair(size):
    teacher = create_model(f"teacher_{size}", in_chans=1, num_classes=5, input_size=16)
    student = create_model(f"gmenet_{size}", in_chans=1, num_classes=5, input_size=16)
    _, t_maps = teacher(torch.rand(2, 1, 16, 16), return_maps=True)
    _, s_maps = student(torch.rand(2, 1, 8, 8), return_maps=True)
    assert len(t_maps) == len(s_maps) > 0
    for (tc, ts), (sc, ss) in zip(t_maps, s_maps):
        assert tc.shape == sc.shape and ts.shape == ss.shape


def test_askd_zero_for_identical_maps_positive_otherwise():
    torch.manual_seed(0)
    maps = [(torch.randn(4, 8, 1, 1), torch.randn(4, 1, 6, 6)) for _ in range(3)]
    loss, parts = ASKDLoss(weight=5.0)(maps, [(c.clone(), s.clone()) for c, s in maps])
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    other = [(torch.randn_like(c), torch.randn_like(s)) for c, s in maps]
    loss2, parts2 = ASKDLoss(weight=5.0)(maps, other)
    assert loss2.item() > 0
    assert loss2.item() == pytest.approx(5.0 * (parts2["askd_channel"] + parts2["askd_spatial"]).item(), rel=1e-5)
    # 1 - cos: opposite maps give 2, scaled maps give 0 (cosine ignores magnitude)
    a = torch.randn(2, 1, 4, 4)
    assert map_similarity_loss(a, -a).item() == pytest.approx(2.0, abs=1e-5)
    assert map_similarity_loss(a, 3 * a).item() == pytest.approx(0.0, abs=1e-5)
    only_channel, p = ASKDLoss(1.0, "channel")(maps, other)
    assert p["askd_spatial"].item() == 0 and only_channel.item() > 0


def test_askd_refuses_unpaired_maps():
    t = create_model("teacher_s", in_chans=1, **SMALL)
    s = create_model("gmenet_t", in_chans=1, **SMALL)
    _, t_maps = t(torch.rand(1, 1, 32, 32), return_maps=True)
    _, s_maps = s(torch.rand(1, 1, 32, 32), return_maps=True)
    with pytest.raises(UsageError, match="same size letter|differ"):
        ASKDLoss()(s_maps, t_maps)


def test_gradients_reach_the_student_only():
    torch.manual_seed(0)
    teacher = create_model("teacher_t", in_chans=1, **SMALL)
    student = create_model("gmenet_t", in_chans=1, **SMALL)
    task = DistillTask(student, teacher, ClassificationLoss(), ASKDLoss(5.0), kd_weight=1.0).train()
    batch = {
        "hr": torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8),
        "lowres": {4: (torch.arange(4), torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8))},
        "target": torch.tensor([0, 1, 2, 3]),
    }
    out = task(batch)
    assert {"loss", "ce", "askd", "askd_channel", "askd_spatial", "kd", "logits"} <= set(out)
    out["loss"].backward()
    assert all(p.grad is None for p in task.teacher.parameters()) and all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    assert not task.teacher.training  # the frozen (BN-folded) teacher stays in eval mode inside a training task


def _arch(model) -> list[str]:
    return [f"{n}:{tuple(p.shape)}" for n, p in model.named_parameters()]


@pytest.mark.parametrize("switch", [{"global_branch": False}, {"spatial": "standard"}, {"fusion": "gate"},
                                    {"fusion": "sum"}, {"global_stride": 1}, {"dilations": (1, 2)}])
def test_each_ablation_switch_changes_the_architecture(switch):
    base = create_model("gmenet_s", in_chans=1, **SMALL)
    changed = create_model("gmenet_s", in_chans=1, **SMALL, **switch)
    assert _arch(base) != _arch(changed)
    assert changed(torch.rand(2, 1, 8, 8)).shape == (2, 5)


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(UsageError, match="Did you mean 'gmenet_s'.*Valid models"):
        create_model("gmenet_ss")
    with pytest.raises(UsageError, match="no option globl_branch"):
        create_model("gmenet_s", globl_branch=False)
    with pytest.raises(UsageError, match="fusion"):
        create_model("gmenet_s", fusion="magic")
    assert get_spec("teacher_s").kind == "teacher" and get_spec("gmenet_s").kind == "student"


def test_counts_are_plausible():
    s = create_model("gmenet_s", in_chans=1, num_classes=8, input_size=48)
    t = create_model("teacher_s", in_chans=1, num_classes=8, input_size=48)
    no_global = create_model("gmenet_s", in_chans=1, num_classes=8, input_size=48, global_branch=False)
    assert count_params(s) > count_params(no_global) > 0
    assert count_flops(s, 1, 12) > count_flops(no_global, 1, 12) > 0
    assert count_flops(t, 1, 48) > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["teacher_s", "gmenet_s"])
def test_cuda_autocast_channels_last(name):
    model = create_model(name, in_chans=1, num_classes=8, input_size=48).cuda().to(memory_format=torch.channels_last)
    x = torch.rand(16, 1, 12, 12, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, maps = model(x, return_maps=True)
    assert logits.shape == (16, 8) and torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["teacher_t2", "teacher_s2", "gmenet_t2", "teacher_t"])
def test_batchnorm_folding_keeps_every_output(name):
    """The frozen teacher runs with BN folded into its convolutions: the same logits and attention maps."""
    from gmenet_cli.models.fuse import count_batchnorm, fuse_batchnorm

    torch.manual_seed(0)
    size = 24 if name.startswith("gmenet") else 48
    model = create_model(name, in_chans=1, num_classes=8, input_size=size)
    for m in model.modules():  # non-trivial running statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    fused = fuse_batchnorm(model)
    # every BN of a teacher folds (a student's mixed-channel blocks keep theirs: BN after a concatenation)
    assert count_batchnorm(fused) == (0 if name.startswith("teacher") else 5) < count_batchnorm(model)
    x = torch.rand(4, 1, size, size)
    with torch.no_grad():
        ref_logits, ref_maps = model(x, return_maps=True)
        logits, maps = fused(x, return_maps=True)
    assert torch.allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)
    for (c, s), (rc, rs) in zip(maps, ref_maps):
        assert torch.allclose(c, rc, atol=1e-4, rtol=1e-4) and torch.allclose(s, rs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_teacher_in_onnxruntime_gives_the_torch_teacher_outputs_and_losses(dtype):
    """distill.teacher_runtime onnxruntime: the folded teacher exported in memory and run by onnxruntime gives
    the logits and maps of the torch one (float rounding), for stored uint8 faces and augmented float ones,
    and a distillation step the same losses and student gradients."""
    pytest.importorskip("onnxruntime")
    from gmenet_cli.training.ort_teacher import OrtTeacher

    torch.manual_seed(0)
    teacher = create_model("teacher_t2", in_chans=1, num_classes=8, input_size=48).eval()
    for m in teacher.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    student = create_model("gmenet_t2", in_chans=1, num_classes=8, input_size=24)
    hr = torch.randint(0, 256, (5, 1, 48, 48), dtype=torch.uint8)
    hr = hr if dtype == torch.uint8 else hr.float() / 255
    tasks = {rt: DistillTask(copy.deepcopy(student), teacher, ClassificationLoss(), ASKDLoss(1.0), kd_weight=1.0,
                             teacher_runtime=rt).train() for rt in ("torch", "onnxruntime")}
    assert isinstance(tasks["onnxruntime"].teacher, OrtTeacher)
    with torch.no_grad():
        ref_logits, ref_maps = tasks["torch"].teacher(hr, return_maps=True)
    logits, maps = tasks["onnxruntime"].teacher(hr, return_maps=True)
    assert len(maps) == len(ref_maps) > 0 and torch.allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)
    for (c, s), (rc, rs) in zip(maps, ref_maps):
        assert torch.allclose(c, rc, atol=1e-4, rtol=1e-4) and torch.allclose(s, rs, atol=1e-4, rtol=1e-4)
    batch = {"hr": hr, "lowres": {4: (torch.arange(5), torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8))},
             "target": torch.tensor([0, 1, 2, 3, 4])}
    outs = {}
    for rt, task in tasks.items():
        torch.manual_seed(1)  # the same dropout masks in both students
        outs[rt] = task(batch)
    for key in ("loss", "askd", "kd"):
        assert torch.allclose(outs["onnxruntime"][key], outs["torch"][key], atol=1e-5, rtol=1e-4), key
    for out in outs.values():
        out["loss"].backward()
    for a, b in zip(tasks["torch"].core.parameters(), tasks["onnxruntime"].core.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-3)


def test_a_teacher_assistant_reads_the_faces_its_scale_smaller_in_torch_and_in_onnxruntime():
    """distill.teacher_scale: a student teaching another reads each HR face area-downsampled by the scale and
    rounded to 8 bits (the LR faces students are trained on), then upsampled by its own preprocessing; the same
    in onnxruntime. A teacher reading the HR face itself would give other logits: the test sees the difference."""
    pytest.importorskip("onnxruntime")
    from gmenet_cli.data.augment import downsample

    torch.manual_seed(0)
    assistant = create_model("gmenet_t2", in_chans=1, num_classes=8, input_size=48).eval()
    student = create_model("gmenet_t2", in_chans=1, num_classes=8, input_size=48)
    hr = torch.rand(4, 1, 48, 48)
    with torch.no_grad():
        want_logits, want_maps = assistant(downsample(hr, 2), return_maps=True)
        _, hr_maps = assistant(hr, return_maps=True)
    assert not torch.allclose(want_maps[0][1], hr_maps[0][1], atol=1e-3)  # the first spatial map
    for rt in ("torch", "onnxruntime"):
        task = DistillTask(copy.deepcopy(student), assistant, ClassificationLoss(), ASKDLoss(1.0),
                           teacher_runtime=rt, teacher_scale=2)
        with torch.no_grad():
            logits, maps = task.teacher(hr, return_maps=True)
            logits_u8 = task.teacher((hr * 255).round().to(torch.uint8))
        assert torch.allclose(logits, want_logits, atol=1e-4, rtol=1e-4), rt
        assert torch.allclose(logits_u8, logits, atol=2e-2), rt  # uint8 faces: the same faces within 1/255
        for (c, s), (rc, rs) in zip(maps, want_maps):
            assert torch.allclose(c, rc, atol=1e-4, rtol=1e-4) and torch.allclose(s, rs, atol=1e-4, rtol=1e-4)


def test_teacher_runtime_choice():
    from gmenet_cli.training import ort_teacher

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert ort_teacher.resolve("auto", cuda) == "torch" and ort_teacher.resolve("torch", cpu) == "torch"
    assert ort_teacher.resolve("auto", cpu) == ("onnxruntime" if ort_teacher.available() else "torch")
    assert ort_teacher.resolve("auto-int8", cpu) == ("onnxruntime-int8" if ort_teacher.available() else "torch")
    assert ort_teacher.resolve("auto-int8", cuda) == "torch"  # a preset naming it still trains on a GPU
    for choice in ("onnxruntime", "onnxruntime-int8"):
        with pytest.raises(UsageError, match=f"{choice} runs the teacher on the CPU"):
            ort_teacher.resolve(choice, cuda)


@pytest.mark.parametrize("saturating", [False, True])
def test_int8_teacher_uses_7_bit_weights_where_int8_products_saturate(saturating, monkeypatch):
    """On x86 CPUs without VNNI onnxruntime's uint8 x int8 convolutions add pairs of products in int16, which
    overflows (an untrained teacher's maps came out up to 27% off, 7% with 7-bit weights): there the
    weights are quantised to 7 bits (reduce_range), elsewhere to the full int8 range."""
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from gmenet_cli.training import ort_teacher

    monkeypatch.setattr(ort_teacher, "saturates", lambda: saturating)
    torch.manual_seed(0)
    teacher = create_model("teacher_t2", in_chans=1, num_classes=8, input_size=24).eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(ort_teacher._Flat(teacher), (torch.zeros(1, 1, 24, 24),), buf, dynamo=False,
                          input_names=["hr"], dynamic_axes={"hr": {0: "batch"}}, opset_version=17)
    graph = ort_teacher.quantized(buf.getvalue(), np.random.default_rng(0).random((8, 1, 24, 24), np.float32))
    weights = [numpy_helper.to_array(t) for t in onnx.load_from_string(graph).graph.initializer
               if t.data_type == onnx.TensorProto.INT8 and t.dims and len(t.dims) == 4]
    peak = max(int(np.abs(w.astype(np.int16)).max()) for w in weights)
    assert peak <= 64 if saturating else peak == 127


def test_int8_teacher_is_quantised_on_training_faces_and_close_to_the_float_one(tiny_store):
    """distill.teacher_runtime onnxruntime-int8: the teacher's convolutions run as int8 (QDQ nodes in the graph
    the session is made from), calibrated on a sample of the training faces given when it is made, not on the
    first batch it sees (check_pairing's all-zero probe, which left every activation range at zero), and its
    outputs stay close to the float teacher's (not equal: that is why it is opt-in); a step runs through it."""
    pytest.importorskip("onnxruntime")
    import onnx

    from gmenet_cli.data.store import Store
    from gmenet_cli.training import ort_teacher

    split = Store(tiny_store).split("train")
    calibration = ort_teacher.calibration_faces(split, count=16)
    assert calibration.dtype == torch.uint8 and len(calibration) == min(16, split.count)
    assert torch.equal(calibration, ort_teacher.calibration_faces(split, count=16))  # a fixed sample
    torch.manual_seed(0)
    size = calibration.shape[-1]
    teacher = create_model("teacher_t2", in_chans=1, num_classes=8, input_size=size).eval()
    student = create_model("gmenet_t2", in_chans=1, num_classes=8, input_size=size // 2)
    tasks = {rt: DistillTask(copy.deepcopy(student), teacher, ClassificationLoss(), ASKDLoss(1.0), kd_weight=1.0,
                             teacher_runtime=rt, teacher_calibration=calibration).train()
             for rt in ("onnxruntime", "onnxruntime-int8")}
    calls = []
    real = ort_teacher.quantized
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ort_teacher, "quantized", lambda g, c: calls.append((real(g, c), c)) or calls[-1][0])
        tasks["onnxruntime-int8"].check_pairing(1, size)  # first call: the zero probe
        hr = calibration.float() / 255
        logits, maps = tasks["onnxruntime-int8"].teacher(hr, return_maps=True)
        tasks["onnxruntime-int8"].teacher(hr[:4], return_maps=True)  # same input type: the same session
    assert len(calls) == 1 and calls[0][1].std() > 0  # calibrated once, on faces
    ops = {n.op_type for n in onnx.load_from_string(calls[0][0]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    ref_logits, ref_maps = tasks["onnxruntime"].teacher(hr, return_maps=True)
    assert not torch.equal(logits, ref_logits)
    assert (logits - ref_logits).abs().mean() < 0.05 * ref_logits.abs().mean()
    # 7-bit weights where int8 products could saturate (x86 without VNNI) double the weight step: twice the room
    tol = 0.1 if ort_teacher.saturates() else 0.05
    for got, ref in zip([t for pair in maps for t in pair], [t for pair in ref_maps for t in pair]):
        assert (got - ref).abs().mean() < tol * ref.abs().mean() + 1e-4  # (an untrained net's maps can be ~0)
    batch = {"hr": hr[:5], "lowres": {4: (torch.arange(5), torch.randint(0, 256, (5, 1, size // 4, size // 4),
                                                                         dtype=torch.uint8))},
             "target": torch.tensor([0, 1, 2, 3, 4])}
    out = tasks["onnxruntime-int8"](batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and out["askd"] > 0
    with pytest.raises(ValueError, match="calibration faces"):
        ort_teacher.OrtTeacher(teacher, int8=True)


def _outputs_and_grads(model, x):
    """Logits, attention maps and every parameter's gradient of sum(logits^2) + sum(maps^2), dropout seeded."""
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout masks
    logits, maps = model(x, return_maps=True)
    flat = [m for pair in maps if pair is not None for m in pair]
    (logits.square().sum() + sum(m.square().sum() for m in flat)).backward()
    return (logits.detach(), [m.detach() for m in flat],
            {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("name", ["gmenet_s2", "teacher_s2"])
def test_kernels_cut_to_small_maps_compute_the_same(name, monkeypatch):
    """same_conv drops the kernel taps a small map never reaches (a 7x7 attention kernel on 3x3 and 2x2
    maps, dilated 3x3 kernels on the global branch's 3x3 level): outputs, maps and every weight's gradient
    stay what the full kernels give."""
    import gmenet_cli.models.blocks as blocks

    torch.manual_seed(0)
    size = 24 if name.startswith("gmenet") else 48  # the working sizes of the shipped pair
    model = create_model(name, num_classes=8, in_chans=1, input_size=size).train()
    x = torch.rand(4, 1, size, size)
    results = {}
    for cut in (True, False):
        if not cut:
            monkeypatch.setattr(blocks, "same_conv", lambda conv, t: conv(t))
        results[cut] = _outputs_and_grads(model, x)
    (l1, m1, g1), (l0, m0, g0) = results[True], results[False]
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-5)
    for a, b in zip(m1, m0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert g1.keys() == g0.keys()
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-5, msg=k)
    # the cut path is taken: some kernel in this model meets a map smaller than itself
    calls = []
    monkeypatch.setattr(blocks, "same_conv", lambda conv, t: calls.append(t.shape[-1] <= conv.kernel_size[0] // 2
                                                                       * conv.dilation[0]) or conv(t))
    model(x)
    assert any(calls)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("cin,cout,size,kernel,stride,dilation,groups", [
    (256, 256, 3, 3, 1, 1, 1),  # dense 3x3 on the last stages' maps
    (256, 256, 2, 3, 1, 1, 1),
    (128, 256, 6, 3, 2, 1, 1),  # strided: 6x6 -> 3x3
    (128, 128, 6, 7, 1, 1, 128),  # depthwise attention kernels
    (256, 256, 3, 5, 1, 1, 256),
    (8, 8, 12, 3, 1, 2, 8),  # the global branch's dilated groups
    (8, 8, 12, 3, 1, 4, 8),
])
def test_hand_summed_weight_gradients_equal_onednns(cin, cout, size, kernel, stride, dilation, groups, layout,
                                                    monkeypatch):
    """blocks.conv2d's weight gradient, summed by hand where oneDNN's is slow, is the same as oneDNN's (same
    sums, another order), and so are the output and the input gradient; the hand path is really taken."""
    import gmenet_cli.models.blocks as blocks

    monkeypatch.setattr(blocks, "HAND_WEIGHT_GRAD", True)  # on whatever CPU runs the tests

    torch.manual_seed(0)
    pad = dilation * (kernel // 2)
    x = torch.randn(16, cin, size, size).contiguous(memory_format=layout).requires_grad_(True)
    w = (torch.randn(cout, cin // groups, kernel, kernel) * 0.1).requires_grad_(True)
    out = blocks.conv2d(x, w, None, (stride, stride), (pad, pad), (dilation, dilation), groups)
    assert type(out.grad_fn).__name__.startswith("_HandWeightGrad")
    grad = torch.randn_like(out)
    gx, gw = torch.autograd.grad(out, (x, w), grad)
    ref = F.conv2d(x, w, None, stride, pad, dilation, groups)
    rx, rw = torch.autograd.grad(ref, (x, w), grad)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(gx, rx)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # inference (the frozen teacher, predict): plain F.conv2d
        assert blocks.conv2d(x, w, None, (stride,) * 2, (pad,) * 2, (dilation,) * 2, groups).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # train.cpu_bf16: plain F.conv2d, autocast's dtype
        assert not type(blocks.conv2d(x, w, None, (stride,) * 2, (pad,) * 2, (dilation,) * 2, groups).grad_fn
                        ).__name__.startswith("_HandWeightGrad")
    big = torch.randn(16, cin, 24, 24, requires_grad=True)  # large maps keep oneDNN's gradient
    out = blocks.conv2d(big, w, None, (1, 1), (pad, pad), (1, 1), groups)
    assert not type(out.grad_fn).__name__.startswith("_HandWeightGrad")


def test_student_gradients_with_hand_summed_weight_gradients(monkeypatch):
    """The shipped student's every gradient is the same with the hand-summed weight gradients as with
    oneDNN's (train_speed.py's "oneDNN's weight gradients" row), and the model takes the hand path."""
    import gmenet_cli.models.blocks as blocks

    torch.manual_seed(0)
    model = create_model("gmenet_s2", num_classes=8, in_chans=1, input_size=24).to(
        memory_format=torch.channels_last).train()
    x = torch.rand(8, 1, 24, 24).contiguous(memory_format=torch.channels_last)
    grads, hand = {}, []
    original = blocks._HandWeightGrad.apply
    monkeypatch.setattr(blocks._HandWeightGrad, "apply", lambda *a: hand.append(a[1].shape) or original(*a))
    for on in (True, False):
        monkeypatch.setattr(blocks, "HAND_WEIGHT_GRAD", on)
        grads[on] = _outputs_and_grads(model, x)[2]
    assert len(hand) >= 10  # dense 3x3 on 3x3 / 2x2 maps, depthwise attention on 6x6 and below, dilated
    assert grads[True].keys() == grads[False].keys()
    for k in grads[False]:
        torch.testing.assert_close(grads[True][k], grads[False][k], rtol=1e-4, atol=1e-5, msg=k)


def test_hand_summed_weight_gradients_only_on_the_cpus_measured(monkeypatch):
    """By default (HAND_WEIGHT_GRAD None) the hand path is taken on AVX2 CPUs, where it was measured faster,
    and not on others (AVX-512: not measured)."""
    import gmenet_cli.models.blocks as blocks

    x = torch.randn(4, 256, 3, 3, requires_grad=True)
    w = torch.randn(256, 256, 3, 3, requires_grad=True)
    for capability, hand in (("AVX2", True), ("AVX512", False), ("DEFAULT", False)):
        blocks._measured_cpu.cache_clear()
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        out = blocks.conv2d(x, w, None, (1, 1), (1, 1), (1, 1), 1)
        assert type(out.grad_fn).__name__.startswith("_HandWeightGrad") == hand, capability
    blocks._measured_cpu.cache_clear()
