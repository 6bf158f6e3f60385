"""An affine distortion of a whole 105x105 Omniglot drawing about its centre, before it is shrunk to 28x28.

The extrapolation study (studies/extrapolation_omniglot.py) tests learners on drawings sheared and scaled
further than anything in meta-training. A point p = (column, row) of the drawing, rows counted downward and the
centre c = (52.5, 52.5) in pixel units (pixel i covers [i, i + 1)), moves to

    p' = c + scale * [[1, tan(shear)], [0, 1]] (p - c)

- shear (radians): rows stay; each row slides sideways by tan(shear) times its distance below the centre, so a
  vertical stroke leans by `shear` (ink below the centre moves right for shear > 0, ink above moves left);
- scale: the drawing magnified `scale` times about the centre: scale 2 doubles every stroke's length and width
  and crops the ink that lands outside the 105x105 frame (everything beyond 26.25 pixels of the centre in
  either axis); scale 1/3 shrinks it to the middle third, surrounded by blank paper.

Each output pixel is the bilinear interpolation of the drawing at the inverse image of its centre; paper
(white, 255) fills what comes from outside the frame. Shear 0 and scale 1 return the drawing unchanged.
"""

import math

from PIL import Image

from metalab.errors import MetalabError

PAPER = 255  # Omniglot's background before inversion (ink dark)


def check_affine(shear: float, scale: float) -> None:
    if not (math.isfinite(shear) and abs(shear) < math.pi / 2):
        raise MetalabError(f"shear must be an angle in radians strictly between -pi/2 and pi/2, got {shear}")
    if not (math.isfinite(scale) and scale > 0):
        raise MetalabError(f"scale must be a positive finite number, got {scale}")


def affine_drawing(image: Image.Image, shear: float = 0.0, scale: float = 1.0) -> Image.Image:
    """The greyscale ("L") drawing sheared by `shear` radians and magnified `scale` times about its centre."""
    check_affine(shear, scale)
    grey = image.convert("L")
    if shear == 0 and scale == 1:
        return grey
    width, height = grey.size
    cx, cy = width / 2, height / 2
    # PIL asks for the inverse map, output -> input: p = c + A^-1 (p' - c), A^-1 = [[1, -tan], [0, 1]] / scale.
    a, b, e = 1 / scale, -math.tan(shear) / scale, 1 / scale
    inverse = (a, b, cx - a * cx - b * cy, 0.0, e, cy - e * cy)
    return grey.transform(grey.size, Image.Transform.AFFINE, inverse, resample=Image.Resampling.BILINEAR,
                          fillcolor=PAPER)

