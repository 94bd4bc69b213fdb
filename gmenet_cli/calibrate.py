"""Confidence calibration: temperatures per trained face size, and the calibration error they leave.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): the logits z of a
face read at size s become softmax(z / T_s), with T_s > 0 chosen to minimise the negative log-likelihood of
the validation split. Dividing by one positive number never changes which class wins, so accuracy is
untouched; only the confidences move. Expected calibration error (ECE): faces binned by their top-1
confidence into 15 equal-width bins, ECE = sum over bins of (bin share) x |accuracy - mean confidence|.

Class-based temperature scaling (Frenkel & Goldberger, "Network Calibration by Class-based Temperature
Scaling", EUSIPCO 2021): one temperature per size *and predicted class*, T_{s,k}, fitted the same way on the
validation faces the model labels k (a class predicted for fewer than MIN_CLASS of them keeps T_s). A model
trained with the logit-adjusted loss labels by a class-balanced rule, so its "disgust" is right less often
than its "neutral" at the same logit margin: one temperature cannot fit both (6 px ECE 0.058 at best), one per
predicted class can. The label is still the argmax of the logits (z / T_{s,k} keeps k on top), so accuracy is
untouched. Per size, the class temperatures are kept only where they calibrate faces they were not fitted on
better than the one temperature does, by at least MIN_GAIN: each is fitted on one half of the validation faces
and its ECE measured on the other (two folds, averaged: `ece_heldout`); smaller differences are within the
folds' noise. Otherwise (the 48 px model, already calibrated by one temperature) every class gets the one
temperature. The kept choice is then fitted on the whole split. A model whose raw confidences are already
better calibrated held out than any fitted temperature leaves them (kept "none": every temperature 1), so
calibration never makes a model's confidences worse than training left them.

numpy only: `gmenet predict` imports this without torch.
"""

from __future__ import annotations

import numpy as np

BINS = 15  # ECE bins (Guo et al. used 15)
T_RANGE = (0.05, 20.0)
MIN_CLASS = 30  # validation faces a predicted class needs for its own temperature
MIN_GAIN = 0.005  # held-out ECE the class temperatures must save over one temperature to be kept


def softmax(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = np.asarray(logits, dtype=np.float64) / temperature
    m = z.max(axis=1, keepdims=True)
    log_norm = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    return float(np.mean(log_norm - z[np.arange(len(z)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in T_RANGE minimising the NLL: golden-section search on log T (the NLL is convex in 1/T)."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 1.0
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, labels, np.exp(a)), nll(logits, labels, np.exp(b))
    for _ in range(60):  # interval shrinks by 0.618 each step: 60 steps reach ~1e-12 in log T
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, labels, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, labels, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> dict:
    """Per confidence bin: count, mean confidence, accuracy; and the ECE they add up to."""
    probs = np.asarray(probs, dtype=np.float64)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    right = (pred == np.asarray(labels)).astype(np.float64)
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)  # bin (k/bins, (k+1)/bins]
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    mean_conf = np.divide(np.bincount(idx, conf, bins), count, out=np.zeros(bins), where=count > 0)
    acc = np.divide(np.bincount(idx, right, bins), count, out=np.zeros(bins), where=count > 0)
    n = max(len(conf), 1)
    return {"ece": float(np.sum(count / n * np.abs(acc - mean_conf))), "count": count.astype(int).tolist(),
            "confidence": mean_conf.tolist(), "accuracy": acc.tolist()}


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    return reliability(probs, labels, bins)["ece"]


def fit_class_temperatures(logits: np.ndarray, labels: np.ndarray, t_all: float | None = None) -> list[float]:
    """T_k for each class k: fitted on the faces the logits label k; t_all (the size's one temperature) for
    a class predicted for fewer than MIN_CLASS faces."""
    logits, labels = np.asarray(logits), np.asarray(labels, dtype=np.int64)
    t_all = fit_temperature(logits, labels) if t_all is None else t_all
    pred = logits.argmax(axis=1) if len(logits) else np.zeros(0, dtype=np.int64)
    temps = []
    for k in range(logits.shape[1]):
        mine = pred == k
        temps.append(fit_temperature(logits[mine], labels[mine]) if mine.sum() >= MIN_CLASS else t_all)
    return temps


def calibrated_softmax(logits: np.ndarray, temperature) -> np.ndarray:
    """softmax(z / T) with T one number, or one per class (T_k for the class each face's logits put on top)."""
    t = np.asarray(temperature, dtype=np.float64)
    if t.ndim == 0:
        return softmax(logits, float(t))
    z = np.asarray(logits, dtype=np.float64)
    return softmax(z / t[z.argmax(axis=1)][:, None]) if len(z) else softmax(z)


def _heldout_ece(z: np.ndarray, y: np.ndarray, per_class: bool | None, seed: int = 0) -> float:
    """Temperatures (per class, or one; None: no temperature) fitted on one half of the faces, ECE measured on
    the other; two folds, averaged."""
    order = np.random.default_rng(seed).permutation(len(y))
    halves = (order[: len(y) // 2], order[len(y) // 2 :])
    errors = []
    for fit_on, test_on in (halves, halves[::-1]):
        if len(fit_on) == 0 or len(test_on) == 0:
            continue
        temps = 1.0 if per_class is None else (fit_class_temperatures if per_class else fit_temperature)(
            z[fit_on], y[fit_on])
        errors.append(ece(calibrated_softmax(z[test_on], temps), y[test_on]))
    return float(np.mean(errors)) if errors else float("nan")


def calibrate(logits_by_size: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict:
    """{face px: (logits (N, K), labels (N,))} -> the checkpoint's `calibration` entry: per size, one
    temperature and the temperature of each predicted class (all equal where one temperature calibrates better
    held out, all 1 where no temperature does; keys are strings: checkpoints and ONNX metadata hold plain data),
    which was kept ("class", "one", "none"; the fitted one temperature stays in `temperature_fitted`), and the
    ECE before, with the fitted temperature, after (what predict applies) and held out (of the kept choice)."""
    out: dict = {"method": "class-temperature", "temperature": {}, "class_temperature": {}, "kept": {},
                 "temperature_fitted": {}, "ece_before": {}, "ece_temperature": {}, "ece_after": {},
                 "ece_heldout": {}}
    for px, (z, y) in sorted(logits_by_size.items()):
        z, y = np.asarray(z), np.asarray(y, dtype=np.int64)
        t = fit_temperature(z, y)
        heldout = {kind: _heldout_ece(z, y, per_class)
                   for kind, per_class in (("class", True), ("one", False), ("none", None))}
        kept = "class" if heldout["class"] < heldout["one"] - MIN_GAIN else "one"
        if heldout["none"] <= heldout[kept]:
            kept = "none"
        t_kept = 1.0 if kept == "none" else t  # the one temperature predict applies
        temps = fit_class_temperatures(z, y, t) if kept == "class" else [t_kept] * z.shape[1]
        key = str(px)
        out["temperature"][key] = round(t_kept, 4)
        out["temperature_fitted"][key] = round(t, 4)
        out["class_temperature"][key] = [round(v, 4) for v in temps]
        out["kept"][key] = kept
        out["ece_before"][key] = round(ece(softmax(z), y), 4)
        out["ece_temperature"][key] = round(ece(softmax(z, t), y), 4)
        out["ece_after"][key] = round(ece(calibrated_softmax(z, out["class_temperature"][key]), y), 4)
        out["ece_heldout"][key] = round(heldout[kept], 4)
    return out


def describe(cal: dict, px) -> str:
    """One face size of a `calibration` entry in words, as train's last line and `gmenet calibrate` print it:
    the temperature kept, and the ECE before, after and held out."""
    key = str(px)
    t, kept, before = cal["temperature"][key], cal["kept"][key], cal["ece_before"][key]
    if kept == "none":
        return (f"no temperature (the fitted {cal['temperature_fitted'][key]:.3f} does not calibrate better held "
                f"out); ECE {before:.4f} as trained")
    per = cal["class_temperature"][key]
    which = (f"T {t:.3f}, per predicted class {min(per):.3f}-{max(per):.3f}" if kept == "class"
             else f"T {t:.3f} for every class")
    return f"{which}; ECE {before:.4f} -> {cal['ece_after'][key]:.4f} (held out {cal['ece_heldout'][key]:.4f})"


def temperature_for(calibration: dict | None, size: int) -> float:
    """The one temperature stored for face size `size` (1 = uncalibrated, as every older checkpoint)."""
    temps = (calibration or {}).get("temperature") or {}
    return float(temps.get(str(size), 1.0))


def temperatures_for(calibration: dict | None, size: int):
    """What calibrated_softmax takes for face size `size`: its class temperatures (a list), or for a checkpoint
    calibrated before them its one temperature (1 if none)."""
    per_class = ((calibration or {}).get("class_temperature") or {}).get(str(size))
    return [float(v) for v in per_class] if per_class else temperature_for(calibration, size)
