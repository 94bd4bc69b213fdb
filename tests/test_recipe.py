"""The training recipe: on-the-fly augmentation and LR synthesis, weight averaging, flip TTA, the "2" model
family (student at half size, pooled A-SKD maps), one-cycle and batch-scaled learning rates, FERPlus labels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import synth
import torch
import torch.nn.functional as F
from conftest import interrupt_then_resume

from gmenet_cli import checkpoint
from gmenet_cli.config import Config, PrepareConfig
from gmenet_cli.data import augment
from gmenet_cli.data.loader import PairedBatches
from gmenet_cli.data.prepare import prepare
from gmenet_cli.data.store import Store
from gmenet_cli.losses import ASKDLoss, ClassificationLoss, check_pairing
from gmenet_cli.models import create_model
from gmenet_cli.tasks import ClassifierTask, DistillTask
from gmenet_cli.training.ema import WeightEMA
from gmenet_cli.training.optim import build_optimizer, build_schedule, peak_lr


def _online_batch(split, scales, seed=0, **aug):
    params = {"shift": 4.0, "scale": 0.1, "rotate": 10.0, "erase": 0.0, **aug}
    loader = PairedBatches(split, 16, scales, seed=seed, online=params)
    return next(iter(loader))


def test_online_views_are_aligned_and_grouped_by_scale(tiny_store):
    split = Store(tiny_store).split("train")
    batch = _online_batch(split, [2, 4])
    assert batch["hr"].dtype == torch.uint8 and "lowres" not in batch
    pos = batch["augment"]["positions"]
    assert sorted(torch.cat(list(pos.values())).tolist()) == list(range(16))  # every sample gets one scale
    views = augment.make_views(dict(batch), student=True)
    hr = views["hr"]
    assert hr.dtype == torch.float32 and 0 <= hr.min() and hr.max() <= 1
    for scale, (p, low) in views["lowres"].items():
        assert low.shape[-1] == 48 // scale
        # the LR face is the area-downsampled augmented HR face, rounded to 8 bits: aligned to the sub-pixel
        expected = torch.round(F.avg_pool2d(hr[p], scale) * 255) / 255
        assert torch.equal(low, expected)
        assert torch.allclose(low * 255, torch.round(low * 255))


def test_a_loader_left_early_stops_its_producer_thread(tiny_store):
    import threading

    split = Store(tiny_store).split("train")
    before = set(threading.enumerate())
    batches = iter(PairedBatches(split, 4, [2], seed=0, prefetch=1))
    next(batches)  # the producer is now blocked on a full queue
    assert set(threading.enumerate()) - before
    batches.close()  # what `break`, an exception or garbage collection does
    assert not set(threading.enumerate()) - before


def test_augmentation_parameters_are_seeded_and_identity_is_exact(tiny_store):
    split = Store(tiny_store).split("train")
    a, b = _online_batch(split, [4], seed=3), _online_batch(split, [4], seed=3)
    assert torch.equal(a["augment"]["theta"], b["augment"]["theta"])
    c = _online_batch(split, [4], seed=4)
    assert not torch.equal(a["augment"]["theta"], c["augment"]["theta"])
    none = PairedBatches(split, 8, [], seed=0, flip=False, online={"shift": 0, "scale": 0, "rotate": 0, "erase": 0})
    batch = next(iter(none))
    out = augment.warp(batch["hr"], batch["augment"])
    assert torch.allclose(out * 255, batch["hr"].float(), atol=1e-3)  # no augmentation = the stored face


def test_random_erasing_paints_a_box(tiny_store):
    split = Store(tiny_store).split("train")
    batch = _online_batch(split, [], shift=0, scale=0, rotate=0, erase=1.0)
    boxes = batch["augment"]["erase"]
    out = augment.warp(batch["hr"], batch["augment"])
    y0, y1, x0, x1, grey = boxes[0].tolist()
    assert y1 > y0 and x1 > x0
    assert torch.allclose(out[0, :, int(y0):int(y1), int(x0):int(x1)], torch.tensor(grey))


def _meta_task():
    torch.manual_seed(0)
    teacher = create_model("teacher_t2", in_chans=1, num_classes=8, input_size=48)
    student = create_model("gmenet_t2", in_chans=1, num_classes=8, input_size=24)
    return DistillTask(student, teacher, ClassificationLoss(0.1, soft=True), ASKDLoss(1.0), kd_weight=1.0)


def test_train_and_validation_steps_leave_no_tensor_behind_on_the_host(tiny_store):
    """PyTorch's meta device runs shapes only and refuses to mix with CPU tensors ("Tensor on device meta is
    not on the expected device cpu"): a label, vote, position or augmentation tensor left on the host by the
    step, the losses or validation fails here exactly as it would on a GPU."""
    from gmenet_cli.evaluate import score_split
    from gmenet_cli.runtime import Runtime, to_device
    from gmenet_cli.training.loop import train_step

    meta = torch.device("meta")
    runtime = Runtime(meta, amp=False, channels_last=False)
    split = Store(tiny_store).split("train")
    task = _meta_task().to(meta)
    cfg = Config()
    opt = build_optimizer(task.core, cfg)
    sched = build_schedule(opt, cfg, 4)
    ema = WeightEMA(task.core, 0.99)
    aug = {"shift": 2, "scale": 0.1, "rotate": 5, "erase": 0.5, "brightness": 0.1, "contrast": 0.2, "gamma": 0.2,
           "blur": 0.5, "noise": 4}
    for stored in (False, True):  # on-the-fly LR synthesis and the stored LR bytes, both augmented
        loader = PairedBatches(split, 8, [2, 4], seed=0, with_hr=True, pin=False, online=aug, stored_lowres=stored)
        batch = to_device(next(iter(loader)), meta)
        res = train_step(task.train(), batch, opt, sched, runtime, grad_clip=5.0, ema=ema)
        assert res["loss"].device.type == "meta" and res["logits"].shape == (8, 8)
    for scale in (None, 4):  # validation: the HR view and an LR view, with flip TTA
        conf, loss = score_split(task.core.eval(), split, scale, meta, batch_size=8, tta=True)
        assert conf.device.type == "meta" and conf.shape == (8, 8) and loss.device.type == "meta"


def test_s2_family_pairs_through_pooled_maps():
    teacher = create_model("teacher_t2", in_chans=1, num_classes=8, input_size=48)
    student = create_model("gmenet_t2", in_chans=1, num_classes=8, input_size=24)
    _, t_maps = teacher(torch.rand(2, 1, 48, 48), return_maps=True)
    _, s_maps = student(torch.rand(2, 1, 12, 12), return_maps=True)
    check_pairing(s_maps, t_maps)
    assert [m[1].shape[-1] for m in t_maps] == [48, 24, 12, 6, 3]
    assert [m[1].shape[-1] for m in s_maps] == [24, 12, 6, 3, 2]
    loss, parts = ASKDLoss(1.0)(s_maps, t_maps)
    assert torch.isfinite(loss) and parts["askd_spatial"] > 0
    # identical maps pooled to the student's size give zero loss
    same = [(c, F.adaptive_avg_pool2d(s, sm.shape[-2:])) for (c, s), (_, sm) in zip(t_maps, s_maps)]
    assert ASKDLoss(1.0)(same, t_maps)[0].item() == pytest.approx(0.0, abs=1e-5)
    plain = create_model("plain_t2", in_chans=1, num_classes=8, input_size=24)
    logits, maps = plain(torch.rand(2, 1, 12, 12), return_maps=True)
    assert logits.shape == (2, 8) and maps == []


def test_onecycle_schedule_and_batch_scaled_peak():
    cfg = Config()
    assert cfg.optim.schedule == "onecycle" and peak_lr(cfg) == pytest.approx(cfg.optim.lr)
    cfg.train.batch_size = 1024
    assert peak_lr(cfg) == pytest.approx(cfg.optim.lr * 8)
    assert peak_lr(cfg, world=2) == pytest.approx(cfg.optim.lr * 16)
    cfg.optim.scale_lr = "sqrt"
    assert peak_lr(cfg) == pytest.approx(cfg.optim.lr * 8 ** 0.5)
    cfg = Config()
    cfg.train.epochs = 10
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_schedule(opt, cfg, 10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(cfg.optim.lr / 25)
    assert max(lrs) == pytest.approx(cfg.optim.lr, rel=1e-3) and int(np.argmax(lrs)) == 30 - 1
    assert lrs[-1] < cfg.optim.lr / 1000


@pytest.mark.parametrize("momentum", [0.5, 0.9, 0.0])
def test_onecycle_momentum_follows_optim_momentum(momentum):
    """OneCycleLR cycles momentum against the learning rate; it must cycle around optim.momentum (it used to
    overwrite any value with torch's 0.85-0.95), and stay 0 when momentum is off."""
    cfg = Config()
    cfg.train.epochs, cfg.optim.momentum = 2, momentum
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg)
    sched = build_schedule(opt, cfg, 10)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert min(seen) == pytest.approx(max(0.0, momentum - 0.05), abs=1e-6)
    assert max(seen) == pytest.approx(momentum + 0.05 if momentum else 0.0, abs=1e-6)


def test_adamw_learning_rate_scales_with_the_square_root_of_the_batch():
    cfg = Config()
    cfg.optim.name, cfg.train.batch_size = "adamw", 1024
    assert cfg.optim.scale_lr == "auto" and peak_lr(cfg) == pytest.approx(cfg.optim.lr * 8 ** 0.5)
    cfg.optim.name = "sgd"
    assert peak_lr(cfg) == pytest.approx(cfg.optim.lr * 8)


def test_weight_average_warms_up_and_tracks_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = WeightEMA(model, 0.99)
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.add_(2.0)
    ema.update(model)  # first update: decay (1 + 1) / (10 + 1), mostly the new weights
    d = 2 / 11
    assert torch.allclose(ema.module[0].weight, model[0].weight - d)
    assert torch.allclose(ema.module[1].running_mean, torch.full((3,), 2.0 * (1 - d)))
    state = ema.state_dict()
    again = WeightEMA(model, 0.99)
    again.load_state_dict(state)
    assert again.updates == 1 and torch.equal(again.module[0].weight, ema.module[0].weight)


def test_ema_run_saves_the_average_and_resumes_bit_for_bit(tiny_store, cli, workdir, monkeypatch):
    common = ["--data", tiny_store, "--no-distill", "--preset", "tiny", "--epochs", "3", "--deterministic", "-q",
              "--set", "train.ema=0.9"]
    assert cli("train", *common, "--name", "full").exit_code == 0
    last = checkpoint.load(workdir / "runs/train/full/weights/last.pt")
    assert not all(torch.equal(last["state_dict"][k], last["train_state_dict"][k]) for k in last["state_dict"])
    assert all(torch.equal(last["state_dict"][k], last["ema_state"]["module"][k]) for k in last["state_dict"])
    interrupt_then_resume(cli, monkeypatch, common, "cut")
    cut = checkpoint.load(workdir / "runs/train/cut/weights/last.pt")
    for key in ("state_dict", "train_state_dict"):
        assert all(torch.equal(last[key][k], cut[key][k]) for k in last[key])


def test_every_ferplus_store_keeps_votes_and_the_authors_rule_drops_unclear_faces(tmp_path):
    extra = [["amb.png", "(0, 0, 48, 48)", 4, 3, 3, 0, 0, 0, 0, 0, 0, 0],  # top emotion 40%: no clear majority
             ["single.png", "(0, 0, 48, 48)", 5, 1, 1, 1, 1, 1, 0, 0, 0, 0]]  # 5 of 5 after dropping single votes
    root = synth.make_ferplus(tmp_path / "fp", per_class=2, extra_rows=extra)
    import cv2

    for split in ("FER2013Train", "FER2013Valid"):
        for name in ("amb.png", "single.png"):
            cv2.imwrite(str(root / split / name), synth.face(0, 48))
    majority, _ = prepare("ferplus", root, tmp_path / "m", PrepareConfig(scales=[4]))
    authors, manifest = prepare("ferplus", root, tmp_path / "a", PrepareConfig(scales=[4], label_mode="authors"))
    m, a = Store(majority).split("train"), Store(authors).split("train")
    assert m.votes is not None and np.allclose(m.votes.sum(1), 1.0)
    assert m.count == a.count + 1  # only the ambiguous face is dropped
    assert manifest["dropped"]["no clear majority (authors' rule)"] == 2  # one per split


def test_predict_flip_tta_averages_logits(tiny_runs):
    from gmenet_cli.predict import load_classifier

    clf = load_classifier(str(tiny_runs["student"]), "cpu", tta=True)
    crops = [np.random.default_rng(i).integers(0, 256, (1, 12, 12), dtype=np.uint8) for i in range(3)]
    x = np.stack(crops)
    from gmenet_cli.calibrate import calibrated_softmax

    z = (clf.logits(x) + clf.logits(x[..., ::-1].copy())) / 2
    expected = calibrated_softmax(z, clf.temperature(12))  # the model's calibration, applied to the average
    assert np.allclose(clf.classify(crops), expected, atol=1e-5)
    clf.tta = False
    assert np.allclose(clf.classify(crops), calibrated_softmax(clf.logits(x), clf.temperature(12)), atol=1e-5)


@pytest.mark.parametrize(
    "capability, dtype",
    [((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_cuda_precision_is_bf16_only_where_native(monkeypatch, capability, dtype):
    """T4 (7.5) and V100 (7.0) have no bf16 units: float16 with a GradScaler there; A100/H100 bf16."""
    from gmenet_cli.runtime import Runtime, cuda_amp_dtype

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert cuda_amp_dtype(torch.device("cuda", 0)) == dtype
    runtime = Runtime(torch.device("cuda", 0), amp=True, channels_last=False, amp_dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "GradScaler is enabled, but CUDA is not available" on this machine
        assert (runtime.grad_scaler() is not None) == (dtype == torch.float16)
    assert (
        Runtime(torch.device("cuda", 0), amp=False, channels_last=False, amp_dtype=torch.float16).grad_scaler() is None
    )


def test_a_step_through_the_grad_scaler_equals_the_plain_step():
    """The float16 path's bookkeeping (scale, unscale before clipping, step, update), run on the CPU in
    float32: the same update as without a scaler."""
    from gmenet_cli.runtime import Runtime
    from gmenet_cli.training.loop import train_step

    runtime = Runtime(torch.device("cpu"), amp=False, channels_last=False)
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0**10)):
        torch.manual_seed(0)
        model = create_model("plain_t2", in_chans=1, num_classes=8, input_size=24)
        task = ClassifierTask(model, ClassificationLoss(), "hr")
        cfg = Config()
        opt = build_optimizer(model, cfg)
        sched = build_schedule(opt, cfg, 4)
        gen = torch.Generator().manual_seed(1)
        batch = {"hr": torch.rand(4, 1, 24, 24, generator=gen), "target": torch.tensor([0, 1, 2, 3])}
        train_step(task.train(), batch, opt, sched, runtime, grad_clip=0.5, scaler=scaler)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*results))


def test_every_rank_and_epoch_reseeds_dropout(tiny_store, cli, workdir, monkeypatch):
    """Per-rank, per-epoch torch seeds, set at every epoch start (CPU and CUDA): a resumed run under torchrun
    replays each rank's own stream (one rank's saved CPU state used to be restored on every rank)."""
    from gmenet_cli.runtime import epoch_seed

    seeds = {epoch_seed(0, e, r) for e in range(3) for r in range(2)}
    assert len(seeds) == 6 and epoch_seed(0, 1, 1) == epoch_seed(0, 1, 1)
    seen = []
    real = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda s: (seen.append(int(s)), real(s))[1])
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "2", "--seed", "5", "-q")
    assert res.exit_code == 0, res.output
    assert epoch_seed(5, 0, 0) in seen and epoch_seed(5, 1, 0) in seen


def test_mixup_partners_stay_in_their_scale_group_and_leave_the_other_draws_alone(tiny_store):
    split = Store(tiny_store).split("train")
    plain, mixed = _online_batch(split, [2, 4], seed=5), _online_batch(split, [2, 4], seed=5, mixup=0.4)
    assert "mix_lam" not in plain["augment"]
    for key in ("theta", "erase"):  # drawn after everything else: a recipe without mixup keeps its stream
        assert torch.equal(plain["augment"][key], mixed["augment"][key])
    lam, perm = float(mixed["augment"]["mix_lam"]), mixed["augment"]["mix_perm"]
    assert 0 < lam < 1 and sorted(perm.tolist()) == list(range(16)) and not torch.equal(perm, torch.arange(16))
    for pos in mixed["augment"]["positions"].values():
        assert set(perm[pos].tolist()) == set(pos.tolist())


@pytest.mark.parametrize("stored", [False, True])
def test_mixup_blends_the_hr_face_its_lr_faces_and_the_targets_alike(tiny_store, stored):
    split = Store(tiny_store).split("train")
    aug = {"shift": 4.0, "scale": 0.1, "rotate": 10.0, "erase": 0.0}

    def views(**extra):
        loader = PairedBatches(split, 16, [2, 4], seed=2, pin=False, online={**aug, **extra}, stored_lowres=stored)
        batch = next(iter(loader))
        return batch["augment"], augment.make_views(batch, student=True)

    _, plain = views()
    params, mixed = views(mixup=0.4)
    lam, perm = params["mix_lam"], params["mix_perm"]
    assert torch.allclose(mixed["hr"], lam * plain["hr"] + (1 - lam) * plain["hr"][perm], atol=1e-6)
    for s, (pos, low) in mixed["lowres"].items():
        p0, low0 = plain["lowres"][s]
        assert torch.equal(pos, p0)
        local = torch.searchsorted(pos, perm[pos])  # each face's partner, within the group
        # LR faces are rounded to 8 bits after the blend: within half a level of blending the plain LR faces
        assert (low - (lam * low0 + (1 - lam) * low0[local])).abs().max() <= 1.01 / 255
    assert torch.equal(mixed["mix"][0], perm)

    logits = torch.randn(16, 8)
    hard = ClassificationLoss()
    both = lam * F.cross_entropy(logits, mixed["target"]) + (1 - lam) * F.cross_entropy(logits, mixed["target"][perm])
    assert torch.allclose(hard(logits, mixed), both)
    soft = ClassificationLoss(soft=True, prior=[1 / 8] * 8, tau=0.5)  # vote targets: the blend of the votes
    votes = lam * mixed["votes"] + (1 - lam) * mixed["votes"][perm]
    assert torch.allclose(soft(logits, mixed), soft(logits, {"votes": votes}), atol=1e-6)


def test_mixup_reaches_the_training_step(tiny_store, cli, workdir, monkeypatch):
    """augment.mixup through the real command: every training batch's loss sees the blend; none without it."""
    seen = []
    forward = ClassificationLoss.forward

    def spy(self, logits, batch):
        seen.append("mix" in batch)
        return forward(self, logits, batch)

    monkeypatch.setattr(ClassificationLoss, "forward", spy)
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "--name", "mx", "-q",
              "--set", "augment.mixup=0.4")
    assert res.exit_code == 0, res.output
    assert seen and all(seen)
    seen.clear()
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "--name", "nomx", "-q")
    assert res.exit_code == 0, res.output
    assert seen and not any(seen)
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "--name", "bad", "-q",
              "--set", "augment.mixup=-1")
    assert res.exit_code == 2 and "augment.mixup" in res.stderr
