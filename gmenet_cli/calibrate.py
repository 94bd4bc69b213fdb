"""Confidence calibration: one temperature per trained face size, and the calibration error it leaves.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): the logits z of a
face read at size s become softmax(z / T_s), with T_s > 0 chosen to minimise the negative log-likelihood of
the validation split. Dividing by one positive number never changes which class wins, so accuracy is
untouched; only the confidences move. Expected calibration error (ECE): faces binned by their top-1
confidence into 15 equal-width bins, ECE = sum over bins of (bin share) x |accuracy - mean confidence|.

numpy only: `gmenet predict` imports this without torch.
"""

from __future__ import annotations

import numpy as np

BINS = 15  # ECE bins (Guo et al. used 15)
T_RANGE = (0.05, 20.0)


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


def calibrate(logits_by_size: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict:
    """{face px: (logits (N, K), labels (N,))} -> the checkpoint's `calibration` entry: a temperature per
    size (keys are strings: checkpoints and ONNX metadata hold plain data) and the ECE before and after."""
    out: dict = {"method": "temperature", "temperature": {}, "ece_before": {}, "ece_after": {}}
    for px, (z, y) in sorted(logits_by_size.items()):
        t = fit_temperature(z, y)
        out["temperature"][str(px)] = round(t, 4)
        out["ece_before"][str(px)] = round(ece(softmax(z), y), 4)
        out["ece_after"][str(px)] = round(ece(softmax(z, t), y), 4)
    return out


def temperature_for(calibration: dict | None, size: int) -> float:
    """The temperature stored for face size `size` (1 = uncalibrated, as every older checkpoint)."""
    temps = (calibration or {}).get("temperature") or {}
    return float(temps.get(str(size), 1.0))
