"""Make examples/crowd.jpg: a "classroom seen from the back of the hall" built from the public-domain
astronaut portrait (examples/astronaut.png), so the README can show a crowd without a photo whose licence
forbids it. 28 copies of the portrait's head and shoulders, mirrored or not, in rows that shrink with
distance: faces from about 40 px (front) to 10 px (back). Deterministic.

    python examples/make_crowd.py   # -> examples/crowd.jpg
"""

from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
FACE_BOX = (150, 20, 190, 250)  # x, y, w, h of head and shoulders in astronaut.png (the face is ~100 px wide)
FACE_WIDTH = 100  # the face's width inside that box


def main() -> None:
    src = cv2.imread(str(HERE / "astronaut.png"))
    x, y, w, h = FACE_BOX
    person = src[y : y + h, x : x + w]
    W, H = 1024, 576
    rng = np.random.default_rng(0)
    # a floor-to-wall gradient, lighter at the back
    canvas = np.linspace(150, 90, H, dtype=np.float32)[:, None, None] * np.array([0.95, 1.0, 1.05], np.float32)
    canvas = np.repeat(canvas, W, axis=1).astype(np.uint8)
    rows = [(10, 60, 9), (14, 120, 8), (20, 200, 6), (28, 300, 3), (40, 420, 2)]  # face px, top y, people
    for face_px, top, count in rows:
        scale = face_px / FACE_WIDTH
        pw, ph = max(2, round(w * scale)), max(2, round(h * scale))
        small = cv2.resize(person, (pw, ph), interpolation=cv2.INTER_AREA)
        xs = np.linspace(40, W - 40 - pw, count) + rng.uniform(-8, 8, count)
        # a soft oval around head and shoulders, so each person blends into the hall instead of a pasted card
        mask = np.zeros((ph, pw), np.float32)
        cv2.ellipse(mask, (pw // 2, ph // 2), (max(1, pw // 2 - 1), max(1, ph // 2 - 1)), 0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(0.6, pw / 20))[..., None]
        for i, left in enumerate(xs.astype(int)):
            img = small[:, ::-1] if (i + face_px) % 2 else small
            y0 = top + int(rng.integers(-4, 5))
            region = canvas[y0 : y0 + ph, left : left + pw].astype(np.float32)
            canvas[y0 : y0 + ph, left : left + pw] = (mask * img + (1 - mask) * region).astype(np.uint8)
    cv2.imwrite(str(HERE / "crowd.jpg"), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])
    print(f"wrote {HERE / 'crowd.jpg'} ({sum(r[2] for r in rows)} faces of 10-40 px)")


if __name__ == "__main__":
    main()
