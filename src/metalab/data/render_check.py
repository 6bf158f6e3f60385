"""How faithfully data/render.py redraws Omniglot's drawings from their strokes: IoU against the archive's PNGs.

For every drawing of a part's characters: the intersection over union of the ink of the 105x105 render and
of the PNG of the same drawing (ink: dark pixels), and, at the image bank's size (28x28), the IoU of the two
shrunk images' ink (value >= 128, ink high) and their mean absolute difference on the 0..255 scale.
"""

import io
import zipfile

import numpy as np
from PIL import Image

from metalab.data import download, paths
from metalab.data.omniglot import Omniglot
from metalab.data.render import PEN_WIDTH, render_drawing, small_drawing
from metalab.data.splits import Split
from metalab.data.strokes import STROKES_OF, load_strokes


def ink_iou(a: np.ndarray, b: np.ndarray) -> float:
    """|a & b| / |a | b| of two bool ink masks of one shape (1.0 when both are blank)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def render_iou(data: Omniglot, split: Split, part: str = "train", data_dir=None, download_missing: bool = True,
               pen_width: float = PEN_WIDTH) -> dict:
    """Mean (and spread) of the IoUs above over every drawing of the part; `data` must hold 28x28 images."""
    drawings = load_strokes(data, split, part, data_dir, download_missing, evaluation=part != "train")
    # the image archives that have strokes: their PNGs are the reference
    found = download.ensure_archives(list(STROKES_OF), paths.data_dir(data_dir), download=download_missing)
    archives = {name: zipfile.ZipFile(path) for name, (path, _) in found.items()}
    members = {name: set(archive.namelist()) for name, archive in archives.items()}
    index = {(data.characters[c], int(d)): i for i, (c, d) in enumerate(zip(data.character, data.drawer))}
    full, small, difference = [], [], []
    try:
        for drawing in drawings:
            name, member = next((name, f"{name}/{drawing.character}/{drawing.file}.png") for name in archives
                                if f"{name}/{drawing.character}/{drawing.file}.png" in members[name])
            with Image.open(io.BytesIO(archives[name].read(member))) as png:
                truth = np.asarray(png.convert("L")) < 128
            full.append(ink_iou(np.asarray(render_drawing(drawing.strokes, pen_width).convert("L")) < 128, truth))
            rendered = small_drawing(drawing.strokes, pen_width=pen_width).astype(np.int16)
            bank = data.images[index[(drawing.character, drawing.drawer)]].astype(np.int16)
            small.append(ink_iou(rendered >= 128, bank >= 128))
            difference.append(float(np.abs(rendered - bank).mean()))
    finally:
        for archive in archives.values():
            archive.close()
    full_iou = np.array(full)
    return {"part": part, "split": split.name, "drawings": len(drawings), "pen_width": pen_width,
            "mean_iou_105": float(full_iou.mean()), "min_iou_105": float(full_iou.min()),
            "quantiles_iou_105": {str(q): float(np.quantile(full_iou, q)) for q in (0.05, 0.5, 0.95)},
            "mean_iou_28": float(np.mean(small)), "mean_abs_difference_28": float(np.mean(difference))}
