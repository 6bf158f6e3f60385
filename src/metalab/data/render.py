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

    Vectorized over segments: every (segment, pixel) pair of the pixels whose centres lie in the segment's box,
    widened by the pen (only those can be within reach), in flat arrays of T pairs. A pixel is ink when any
    pair reaches it, which is the same as its nearest segment reaching it.
    """
    radius = pen_width / 2
    a, b = _segments(strokes)  # [S, 2] each
    low = np.ceil((np.minimum(a, b) - radius) * size / extent - 0.5).astype(int).clip(0, size)  # [S, 2]
    high = np.floor((np.maximum(a, b) + radius) * size / extent - 0.5).astype(int).clip(-1, size - 1)
    inside = (high >= low).all(axis=1)  # boxes wholly outside the image hold no pixel
    a, b, low, high = a[inside], b[inside], low[inside], high[inside]
    width = high[:, 0] - low[:, 0] + 1  # [S]
    boxes = width * (high[:, 1] - low[:, 1] + 1)  # [S] pixels in each box
    segment = np.repeat(np.arange(len(a)), boxes)  # [T]
    offset = np.arange(boxes.sum()) - np.repeat(np.cumsum(boxes) - boxes, boxes)  # [T] pixel within its box
    column = low[segment, 0] + offset % width[segment]
    row = low[segment, 1] + offset // width[segment]
    x, y = (column + 0.5) * (extent / size), (row + 0.5) * (extent / size)  # [T] pixel centres
    direction = b - a  # [S, 2]
    length2 = (direction[:, 0] * direction[:, 0] + direction[:, 1] * direction[:, 1])[segment]  # [T]
    ax, ay, dx, dy = a[segment, 0], a[segment, 1], direction[segment, 0], direction[segment, 1]
    with np.errstate(divide="ignore", invalid="ignore"):  # a segment of length 0 (a dot) takes along = 0
        along = np.where(length2 == 0, 0.0, np.clip(((x - ax) * dx + (y - ay) * dy) / length2, 0, 1))
    distance2 = (x - ax - along * dx) ** 2 + (y - ay - along * dy) ** 2  # [T] to the closest point of the segment
    ink = np.zeros(size * size, dtype=bool)
    ink[(row * size + column)[distance2 <= radius**2]] = True
    return ink.reshape(size, size)


def _segments(strokes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The segments of all strokes as (starts, ends), float64 [S, 2] each; a stroke of one sample is one segment
    from it to itself."""
    starts, ends = [np.zeros((0, 2))], [np.zeros((0, 2))]
    for stroke in strokes:
        points = np.asarray(stroke, dtype=np.float64)
        starts.append(points[:-1] if len(points) > 1 else points)
        ends.append(points[1:] if len(points) > 1 else points)
    return np.concatenate(starts), np.concatenate(ends)


def render_drawing(strokes: tuple[np.ndarray, ...], pen_width: float = PEN_WIDTH) -> Image.Image:
    """A drawing's strokes (each [P, 3] x, y, t) -> the 105x105 1-bit image, ink dark, like Omniglot's PNGs."""
    ink = rasterize([image_points(s) for s in strokes], SOURCE_SIZE, pen_width)
    return Image.fromarray(np.where(ink, 0, 255).astype(np.uint8)).convert("1")


def small_drawing(strokes: tuple[np.ndarray, ...], settings: Preprocessing = Preprocessing(),
                  pen_width: float = PEN_WIDTH) -> np.ndarray:
    """uint8 [size, size], ink high: the rendered drawing shrunk as the image bank's drawings are (28x28)."""
    return preprocess_image(render_drawing(strokes, pen_width), settings, "rendered strokes")
