"""The rare-class objective (logit-adjusted loss) and the augmentation for other cameras."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gmenet_cli.data.augment import draw, gaussian_blur, make_views
from gmenet_cli.losses import ClassificationLoss, class_balanced_weights, class_prior


def test_logit_adjusted_loss_is_cross_entropy_on_shifted_logits():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 3), torch.randint(0, 3, (16,))
    votes = torch.softmax(torch.randn(16, 3), 1)
    prior = [0.7, 0.2, 0.1]
    shift = 0.5 * torch.log(torch.tensor(prior))
    hard = ClassificationLoss(prior=prior, tau=0.5)(logits, {"target": target})
    assert hard == pytest.approx(F.cross_entropy(logits + shift, target).item(), abs=1e-6)
    soft = ClassificationLoss(0.1, soft=True, prior=prior, tau=0.5)(logits, {"votes": votes})
    smoothed = votes * 0.9 + 0.1 / 3
    assert soft == pytest.approx(-(smoothed * torch.log_softmax(logits + shift, 1)).sum(1).mean().item(), abs=1e-6)
    assert ClassificationLoss()(logits, {"target": target}) == pytest.approx(F.cross_entropy(logits, target).item())


@pytest.mark.parametrize("tau, gap", [(0.0, np.log(9)), (1.0, 0.0)])
def test_raw_logits_learn_the_balanced_posterior_under_logit_adjustment(tau, gap):
    """A bias-only model on labels drawn 90/10: plain cross-entropy learns the prior (logit gap log 9), the
    balanced softmax (tau 1) learns equal logits, so the rare class is no longer outvoted by its rarity."""
    labels = torch.tensor([0] * 90 + [1] * 10)
    bias = torch.zeros(2, requires_grad=True)
    loss = ClassificationLoss(prior=[0.9, 0.1], tau=tau)
    opt = torch.optim.SGD([bias], lr=1.0)
    for _ in range(500):
        opt.zero_grad()
        loss(bias.expand(100, 2), {"target": labels}).backward()
        opt.step()
    assert (bias[0] - bias[1]).item() == pytest.approx(gap, abs=0.02)


def test_class_balanced_weights_favour_rare_classes_and_keep_the_loss_scale():
    prior = [0.7, 0.25, 0.05]
    w = class_balanced_weights(prior, 20000)
    assert w[0] < w[1] < w[2]
    assert (torch.tensor(prior) * w).sum().item() == pytest.approx(1, abs=1e-5)  # mean 1 over the training faces
    # with n_k in the thousands, beta 0.9999 sits between equal weights and inverse frequency
    assert 1 < (w[2] / w[0]).item() < 0.7 / 0.05


def test_deferred_reweighting_is_plain_cross_entropy_until_its_epoch():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 3), torch.randint(0, 3, (16,))
    votes = torch.softmax(torch.randn(16, 3), 1)
    prior = [0.7, 0.25, 0.05]
    w = class_balanced_weights(prior, 1000)
    hard, soft = ClassificationLoss(prior=prior, drw=0.8, train_size=1000), ClassificationLoss(
        soft=True, prior=prior, drw=0.8, train_size=1000)
    on = []
    for epoch in range(10):
        hard.set_epoch(epoch, 10)
        on.append(hard.reweight)
    assert on == [False] * 8 + [True] * 2  # 0-based: epochs 9 and 10 of 10
    hard.set_epoch(0, 10), soft.set_epoch(0, 10)
    assert hard(logits, {"target": target}) == pytest.approx(F.cross_entropy(logits, target).item(), abs=1e-6)
    assert soft(logits, {"votes": votes}) == pytest.approx(F.cross_entropy(logits, votes).item(), abs=1e-6)
    hard.set_epoch(8, 10), soft.set_epoch(8, 10)
    per_face = F.cross_entropy(logits, target, reduction="none")
    assert hard(logits, {"target": target}) == pytest.approx((w[target] * per_face).mean().item(), abs=1e-6)
    per_face = -(votes * torch.log_softmax(logits, 1)).sum(1)
    assert soft(logits, {"votes": votes}) == pytest.approx(((votes @ w) * per_face).mean().item(), abs=1e-6)
    off = ClassificationLoss(prior=prior)
    off.set_epoch(9, 10)
    assert not off.reweight


def test_class_prior_from_votes_or_labels_is_floored():
    class Split:
        labels = np.array([0, 0, 0, 1])
        votes = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [1, 0, 0], [0, 1, 0]])

    assert class_prior(Split, 3, soft=True) == pytest.approx([0.625, 0.375, 1e-4], abs=1e-3)
    assert class_prior(Split, 3, soft=False)[:2] == pytest.approx([0.75, 0.25], abs=1e-3)
    assert min(class_prior(Split, 3, soft=False)) > 0
    # half majority labels, half votes: the prior of the mixed targets
    assert class_prior(Split, 3, soft=True, majority_mix=0.5)[:2] == pytest.approx([0.6875, 0.3125], abs=1e-3)


def test_majority_mix_blends_each_vote_target_with_its_majority_label():
    torch.manual_seed(0)
    logits, target = torch.randn(16, 3), torch.randint(0, 3, (16,))
    votes = torch.softmax(torch.randn(16, 3), 1)
    batch = {"votes": votes, "target": target}
    for mix in (0.0, 0.3, 1.0):
        loss = ClassificationLoss(soft=True, majority_mix=mix)(logits, batch)
        mixed = (1 - mix) * votes + mix * F.one_hot(target, 3).float()
        assert loss == pytest.approx(-(mixed * torch.log_softmax(logits, 1)).sum(1).mean().item(), abs=1e-6)
    # mix 1 is the majority labels' cross-entropy, as soft_labels false
    one = ClassificationLoss(soft=True, majority_mix=1.0)(logits, batch)
    assert one == pytest.approx(ClassificationLoss()(logits, batch).item(), abs=1e-6)


def _params(**kw):
    return draw(np.random.default_rng(0), 6, 48, True, 4, 0.1, 10, 0.0, [2, 4], **kw)


def test_camera_augmentation_off_changes_nothing_and_on_stays_in_range():
    plain, off = _params(), _params(brightness=0, contrast=0, gamma=0, blur=0, noise=0)
    assert torch.equal(plain["theta"], off["theta"]) and set(plain) == set(off)  # same random stream, no extra keys
    hr = torch.randint(0, 256, (6, 1, 48, 48), dtype=torch.uint8)
    on = _params(brightness=0.2, contrast=0.3, gamma=0.4, blur=1.0, noise=8)
    assert torch.equal(on["theta"], plain["theta"])  # the geometric draws come first and are the same
    views = make_views({"hr": hr, "augment": on}, student=True)
    base = make_views({"hr": hr, "augment": plain}, student=True)
    assert 0 <= views["hr"].min() and views["hr"].max() <= 1 and not torch.equal(views["hr"], base["hr"])
    for s, (pos, low) in views["lowres"].items():
        assert low.shape[-1] == 48 // s and torch.equal(pos, base["lowres"][s][0])
        assert torch.equal(torch.round(low * 255), low * 255)  # 8-bit levels, like a stored face


def test_blur_keeps_flat_faces_and_sigma_zero_is_identity():
    x = torch.rand(3, 1, 12, 12)
    same = gaussian_blur(x, torch.zeros(3))
    assert torch.allclose(same, x, atol=1e-6)
    flat = torch.full((2, 1, 12, 12), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([0.5, 1.5])), flat, atol=1e-6)
    blurred = gaussian_blur(x, torch.tensor([1.5, 1.5, 1.5]))
    assert blurred.std() < x.std()


def test_the_tiny_recipe_trains_with_logit_adjustment_and_camera_augmentation(tiny_store, cli, workdir):
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "--name", "la", "-q",
              "--set", "train.logit_adjust=1", "--set", "augment.blur=0.5", "--set", "augment.noise=4",
              "--set", "augment.gamma=0.3", "--set", "augment.contrast=0.2", "--set", "augment.brightness=0.1")
    assert res.exit_code == 0, res.output
    from gmenet_cli import checkpoint

    ckpt = checkpoint.load(workdir / "runs" / "distill-teacher" / "la" / "weights" / "best.pt")
    assert ckpt["config"]["train"]["logit_adjust"] == 1 and sum(ckpt["class_prior"]) == pytest.approx(1)
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "--name", "bad", "-q",
              "--set", "train.logit_adjust=-1")
    assert res.exit_code == 2 and "logit_adjust" in res.stderr


def test_training_with_majority_mix_keeps_the_prior_of_its_blended_targets(cli, workdir):
    """train.majority_mix through the real command: the checkpoint's class prior (what the logit adjustment
    used) is the blend of the store's mean votes and majority-label frequencies, not the votes' alone. Six
    extra neutral faces with 4 of 10 votes for sadness make the two differ."""
    import cv2
    import synth

    from gmenet_cli import checkpoint
    from gmenet_cli.data.store import Store

    extra = [[f"split{i}.png", "(0, 0, 48, 48)", 6, 0, 0, 4, 0, 0, 0, 0, 0, 0] for i in range(6)]
    root = synth.make_ferplus(workdir / "fp", per_class=2, extra_rows=extra)
    for folder in ("FER2013Train", "FER2013Valid"):
        for row in extra:
            cv2.imwrite(str(root / folder / row[0]), synth.face(0, 48, seed=7))
    assert cli("prepare", "--src", "ferplus", "--root", root, "--scale", "4", "--out", workdir / "store",
               "--label-mode", "votes").exit_code == 0
    res = cli("distill-teacher", "--data", workdir / "store", "--preset", "tiny", "--epochs", "1", "--name", "mix",
              "-q", "--set", "train.soft_labels=true", "--set", "train.majority_mix=0.5",
              "--set", "train.logit_adjust=0.5")
    assert res.exit_code == 0, res.output
    prior = checkpoint.load(workdir / "runs" / "distill-teacher" / "mix" / "weights" / "best.pt")["class_prior"]
    train = Store(workdir / "store").split("train")
    assert prior == pytest.approx(class_prior(train, 8, soft=True, majority_mix=0.5), abs=1e-6)
    assert prior != pytest.approx(class_prior(train, 8, soft=True), abs=1e-3)
    assert prior != pytest.approx(class_prior(train, 8, soft=False), abs=1e-3)


def test_training_turns_deferred_reweighting_on_at_its_epoch(tiny_store, cli, workdir, monkeypatch):
    """train.drw through the real loop: the loss is told each epoch (so a resumed run re-derives it), and the
    class weights are on only from the epoch the fraction names."""
    seen = []
    set_epoch = ClassificationLoss.set_epoch

    def spy(self, epoch, epochs):
        set_epoch(self, epoch, epochs)
        seen.append((epoch, self.reweight))

    monkeypatch.setattr(ClassificationLoss, "set_epoch", spy)
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "2", "--name", "drw", "-q",
              "--set", "train.drw=0.5")
    assert res.exit_code == 0, res.output
    assert seen == [(0, False), (1, True)]
    res = cli("distill-teacher", "--data", tiny_store, "--preset", "tiny", "--epochs", "1", "--name", "bad", "-q",
              "--set", "train.drw=1")
    assert res.exit_code == 2 and "train.drw" in res.stderr
