"""New drawers of a character: random changes of a drawing's strokes before it is rendered (data/render.py).

Where the image-level distortions (data/augment.py, data/elastic.py) bend finished ink, these act on the
pen: the same character drawn by a hand with another pen, a shakier trajectory, strokes placed a little
differently, a stroke left out. Settings (StrokeAugment), all in pixels of the 105x105 drawing:

- pen_width: the pen's width, drawn uniformly from this (low, high) range per drawing;
- jitter: standard deviation of Gaussian noise added to each pen sample, smoothed along the stroke by a
  moving average over `jitter_span` samples so that the trajectory wobbles instead of fraying;
- stroke_rotation (radians), stroke_log_scale, stroke_shift: each stroke rotated, scaled and moved about its
  own centroid by amounts uniform in +-these bounds (independently per stroke);
- dropout: the probability that a stroke is left out (a drawing keeps at least one).

Strokes are float64 [P, 3] (x, y, t) as data/strokes.py reads them; t is never changed.
"""

from dataclasses import dataclass

import numpy as np

from metalab.errors import MetalabError


@dataclass(frozen=True)
class StrokeAugment:
    pen_width: tuple[float, float] = (4.0, 6.0)
    jitter: float = 0.0
    jitter_span: int = 5
    stroke_rotation: float = 0.0
    stroke_log_scale: float = 0.0
    stroke_shift: float = 0.0
    dropout: float = 0.0

    def __post_init__(self):
        low, high = self.pen_width
        if not 0 < low <= high:
            raise MetalabError(f"pen width range must be 0 < low <= high, got {self.pen_width}")
        if not 0 <= self.dropout < 1:
            raise MetalabError(f"stroke dropout must be in [0, 1), got {self.dropout}")
        if self.jitter_span < 1 or min(self.jitter, self.stroke_rotation, self.stroke_log_scale,
                                       self.stroke_shift) < 0:
            raise MetalabError("jitter, stroke rotation, scale and shift must be >= 0 and jitter_span >= 1")


def augment_strokes(strokes: tuple[np.ndarray, ...], rng: np.random.Generator, settings: StrokeAugment
                    ) -> tuple[tuple[np.ndarray, ...], float]:
    """(new strokes, pen width) of one drawing: each stroke [P, 3] -> [P, 3], fewer strokes under dropout."""
    pen_width = float(rng.uniform(*settings.pen_width))
    kept = [s for s in strokes if rng.random() >= settings.dropout]
    if not kept:
        kept = [strokes[int(rng.integers(len(strokes)))]]
    return tuple(_move(_jitter(s, rng, settings), rng, settings) for s in kept), pen_width


def _jitter(stroke: np.ndarray, rng: np.random.Generator, settings: StrokeAugment) -> np.ndarray:
    if settings.jitter == 0:
        return stroke
    noise = rng.normal(0.0, 1.0, size=(len(stroke) + settings.jitter_span - 1, 2))
    # A moving average of `span` unit normals has std 1 / sqrt(span): rescale so each sample moves by `jitter`.
    kernel = np.full(settings.jitter_span, 1.0 / np.sqrt(settings.jitter_span))
    smooth = np.stack([np.convolve(noise[:, k], kernel, mode="valid") for k in range(2)], axis=1)  # [P, 2]
    out = stroke.copy()
    out[:, :2] += settings.jitter * smooth
    return out


def _move(stroke: np.ndarray, rng: np.random.Generator, settings: StrokeAugment) -> np.ndarray:
    """The stroke rotated and scaled about its centroid, then shifted."""
    angle = rng.uniform(-1, 1) * settings.stroke_rotation
    scale = np.exp(rng.uniform(-1, 1) * settings.stroke_log_scale)
    shift = rng.uniform(-1, 1, size=2) * settings.stroke_shift
    if angle == 0 and scale == 1 and not shift.any():
        return stroke
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = scale * np.array([[cos, -sin], [sin, cos]])
    centroid = stroke[:, :2].mean(axis=0)
    out = stroke.copy()
    out[:, :2] = (stroke[:, :2] - centroid) @ matrix.T + centroid + shift
    return out
