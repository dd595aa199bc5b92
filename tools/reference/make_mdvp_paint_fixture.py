"""Parity fixture for MDVP-Bench's painted judge image (gar-cli `eval_judge/mdvp.rs`).

The reference judge (`evaluation/MDVP-Bench/eval_gpt.py`) sends each question's image with its
boxes drawn by `paint_util.paint_text_box`: the image blended with black at 0.8, a green
thickness-2 `cv2.rectangle` per box, and the box number (1-based) in white on a filled black
label sized by `cv2.getTextSize(str(i), FONT_HERSHEY_SIMPLEX, 0.65, 2)` at (x + 4, y + 20).
This script re-implements those steps with OpenCV 4.x on a synthetic picture and writes:

  fixtures/eval/mdvp_paint/input.png    the picture (RGB)
  fixtures/eval/mdvp_paint/painted.png  OpenCV's painting, saved losslessly (RGB)
  fixtures/eval/mdvp_paint/meta.json    boxes, label rectangles, OpenCV version

Needs `opencv-python-headless<5` (4.14.0 was used; OpenCV 5 changed getTextSize) and numpy — not
in tools/reference/requirements.txt. The Rust test compares every pixel outside the label
rectangles exactly; inside them only black/white-ness (the digits are drawn with another font).
"""

import json
import os

import cv2
import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "../../fixtures/eval/mdvp_paint")
W, H = 160, 120


def picture():
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([(x * 255) // W, (y * 255) // H, ((x * 7 + y * 13) % 256)], axis=-1)
    return rgb.astype(np.uint8)


def boxes():
    out = []
    for i in range(10):
        out.append([(i % 5) * 32 + 2.6, (i // 5) * 60 + 3.3, 26.9, 50.2])
    out[5] = [-3.7, 62.2, 30, 40]  # left of the image: the label starts at x = 1
    out[9] = [130, 65, 40, 70]  # past the right and bottom borders
    return out


def paint(bgr, bxs):
    img = cv2.addWeighted(bgr, 0.8, np.zeros_like(bgr), 0.2, 0)
    labels = []
    for n, (x, y, w, h) in enumerate(bxs, start=1):
        x, y, w, h = int(x), int(y), int(w), int(h)
        cv2.rectangle(img, (x, y), (x + w, y + h), (0, 255, 0), 2)
        text = str(n)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.65, 2)
        tx, ty = x + 4, y + 20
        rect = [tx, ty - th - base, tx + tw, ty + base]
        cv2.rectangle(img, (rect[0], rect[1]), (rect[2], rect[3]), (0, 0, 0), -1)
        cv2.putText(img, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (255, 255, 255), 2)
        labels.append(rect)
    return img, labels


def main():
    os.makedirs(OUT, exist_ok=True)
    rgb = picture()
    bxs = boxes()
    painted, labels = paint(rgb[:, :, ::-1].copy(), bxs)
    cv2.imwrite(os.path.join(OUT, "input.png"), rgb[:, :, ::-1])
    cv2.imwrite(os.path.join(OUT, "painted.png"), painted)
    meta = {
        "opencv": cv2.__version__,
        "boxes": bxs,
        "label_rects_inclusive_x0_y0_x1_y1": labels,
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print("wrote", OUT, meta["opencv"])


if __name__ == "__main__":
    main()
