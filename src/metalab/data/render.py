"""Drawings rendered from their strokes (data/strokes.py): a pen of some width along the trajectory.

The raw samples are joined by straight segments (linear interpolation of the trajectory, whatever the
sampling rate), and a pixel is ink when its centre lies within pen_width / 2 of a segment of any stroke (a
stroke of a single sample is a dot). Coordinates: the strokes' x is the drawing's column and their y its row
counted upward (row = -y), both as pixel indices: x = 19 is the centre of column 19, which covers [19, 20) of
the continuous drawing, hence STROKE_OFFSET = (0.5, 0.5). The flip, the offset and PEN_WIDTH are the best
match with the archive's PNGs of meta-training drawings (mean IoU, `metalab data render-check`), among offsets
of -0.5, 0, 0.5 per axis and widths of 2 to 7 pixels; the unflipped y matched far worse.

render_drawing gives the 105x105 drawing as Omniglot's PNGs hold it (1-bit, ink dark); small_drawing
shrinks it exactly as the image bank's drawings are shrunk (data/omniglot.preprocess_image), so that a
rendered 28x28 image and the bank's image of the same drawing are comparable pixel for pixel.
"""

import numpy as np
from PIL import Image

from metalab.data.omniglot import SOURCE_SIZE, Preprocessing, preprocess_image

PEN_WIDTH = 5.0  # pixels of the 105x105 drawing
STROKE_OFFSET = (0.5, 0.5)  # (column, row) added to (x, -y): pixel indices to continuous positions


def image_points(stroke: np.ndarray) -> np.ndarray:
    """[P, 3] (x, y, t) samples -> float64 [P, 2] (column, row) positions in the 105x105 drawing."""
    return np.stack([stroke[:, 0] + STROKE_OFFSET[0], -stroke[:, 1] + STROKE_OFFSET[1]], axis=1)


def rasterize(strokes: list[np.ndarray], size: int, pen_width: float = PEN_WIDTH, extent: float = SOURCE_SIZE
              ) -> np.ndarray:
    """strokes: each float [P, 2] of (column, row) in [0, extent)^2 -> bool [size, size], True = ink.

    Pixel (i, j) of the output covers [j, j + 1) x [i, i + 1) * extent / size; it is ink when its centre is
    within pen_width / 2 (in the strokes' units) of the polyline of a stroke.
    """
    radius = pen_width / 2
    nearest = np.full((size, size), np.inf)  # squared distance of each pixel centre to the closest segment
    for stroke in strokes:
        points = np.asarray(stroke, dtype=np.float64)
        for a, b in zip(points[:-1] if len(points) > 1 else points, points[1:] if len(points) > 1 else points):
            # Only the pixels whose centres lie in the segment's box, widened by the pen, can be within reach.
            low = np.ceil((np.minimum(a, b) - radius) * size / extent - 0.5).astype(int).clip(0, size)
            high = np.floor((np.maximum(a, b) + radius) * size / extent - 0.5).astype(int).clip(-1, size - 1)
            if np.any(high < low):
                continue
            columns = (np.arange(low[0], high[0] + 1) + 0.5) * (extent / size)  # [w]
            rows = (np.arange(low[1], high[1] + 1) + 0.5) * (extent / size)  # [h]
            centres = np.stack(np.meshgrid(columns, rows, indexing="xy"), axis=-1)  # [h, w, 2]
            direction = b - a
            length2 = float(direction @ direction)
            along = 0.0 if length2 == 0 else np.clip((centres - a) @ direction / length2, 0, 1)[..., None]
            distance2 = ((centres - a - along * direction) ** 2).sum(axis=-1)
            block = nearest[low[1]:high[1] + 1, low[0]:high[0] + 1]
            np.minimum(block, distance2, out=block)
    return nearest <= radius**2


def render_drawing(strokes: tuple[np.ndarray, ...], pen_width: float = PEN_WIDTH) -> Image.Image:
    """A drawing's strokes (each [P, 3] x, y, t) -> the 105x105 1-bit image, ink dark, like Omniglot's PNGs."""
    ink = rasterize([image_points(s) for s in strokes], SOURCE_SIZE, pen_width)
    return Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).convert("1")


def small_drawing(strokes: tuple[np.ndarray, ...], settings: Preprocessing = Preprocessing(),
                  pen_width: float = PEN_WIDTH) -> np.ndarray:
    """uint8 [size, size], ink high: the rendered drawing shrunk as the image bank's drawings are (28x28)."""
    return preprocess_image(render_drawing(strokes, pen_width), settings, "rendered strokes")
