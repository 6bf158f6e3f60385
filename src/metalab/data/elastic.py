"""Elastic distortions (Simard, Steinkraus & Platt 2003): random displacement fields, smoothed and scaled.

Each pixel gets a random displacement, uniform in [-1, 1] pixels along each axis; the field is convolved with
a Gaussian of standard deviation `sigma` pixels (normalized kernel, cut at 4 sigma, zero outside the image)
and multiplied by `alpha`. A small sigma leaves the field nearly random (the drawing breaks up), a large one
nearly a translation; in between it bends strokes the way one hand's drawings of a character differ. The
image is then resampled bilinearly at the displaced points (ink outside the frame reads as 0).

Shapes: images [N, C, H, W] float, fields [N, 2, H, W] float32 (row, column displacements in pixels).
"""

import math

import torch
import torch.nn.functional as F

from metalab.errors import MetalabError

TRUNCATE = 4.0  # the Gaussian kernel's radius, in standard deviations


def check_elastic(alpha: float, sigma: float) -> None:
    if not (math.isfinite(alpha) and alpha >= 0):
        raise MetalabError(f"--elastic-alpha (displacement scale, pixels) must be a finite number >= 0, got {alpha}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise MetalabError(f"--elastic-sigma (smoothing, pixels) must be a positive finite number, got {sigma}")


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """float32 [2R+1], R = round(4 sigma): exp(-x^2 / 2 sigma^2) at x = -R..R, summing to 1."""
    radius = int(TRUNCATE * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).to(torch.float32)


def smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """[N, K, H, W] -> the same, each channel convolved with a 2-D Gaussian (separable), zeros outside."""
    kernel = gaussian_kernel(sigma).to(field.dtype)
    radius, channels = len(kernel) // 2, field.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    columns = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    field = F.conv2d(field, rows, padding=(radius, 0), groups=channels)
    return F.conv2d(field, columns, padding=(0, radius), groups=channels)


def displacement_fields(generator: torch.Generator, count: int, height: int, width: int, alpha: float,
                        sigma: float) -> torch.Tensor:
    """float32 [count, 2, H, W]: alpha * Gaussian-smoothed uniform noise in [-1, 1], in pixels."""
    check_elastic(alpha, sigma)
    noise = torch.rand(count, 2, height, width, generator=generator) * 2 - 1
    return smooth(noise, sigma) * alpha


def warp(images: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
    """images [N, C, H, W], fields [N, 2, H, W] -> out[n, c, i, j] = images[n, c] at (i + dy, j + dx), bilinear.

    Written out rather than torch's grid_sample, whose normalized coordinates round: a zero field returns
    the images exactly.
    """
    n, c, h, w = images.shape
    rows = torch.arange(h, dtype=fields.dtype).view(1, h, 1) + fields[:, 0]  # [N, H, W]
    columns = torch.arange(w, dtype=fields.dtype).view(1, 1, w) + fields[:, 1]
    top, left = rows.floor(), columns.floor()
    down, right = (rows - top).to(images.dtype), (columns - left).to(images.dtype)
    top, left = top.long(), left.long()
    flat = images.reshape(n, c, h * w)
    out = torch.zeros_like(images)
    for dr, row_weight in ((0, 1 - down), (1, down)):
        for dc, column_weight in ((0, 1 - right), (1, right)):
            r, col = top + dr, left + dc
            inside = (r >= 0) & (r < h) & (col >= 0) & (col < w)  # [N, H, W]
            index = (r.clamp(0, h - 1) * w + col.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
            corner = flat.gather(2, index).view(n, c, h, w)
            out += corner * (row_weight * column_weight * inside).unsqueeze(1)
    return out


def elastic_distort(images: torch.Tensor, generator: torch.Generator, alpha: float, sigma: float) -> torch.Tensor:
    """images [..., C, H, W] -> the same shape and dtype, each image warped by a field of its own."""
    c, h, w = images.shape[-3:]
    flat = images.reshape(-1, c, h, w)
    fields = displacement_fields(generator, len(flat), h, w, alpha, sigma)
    return warp(flat, fields.to(images.dtype)).view(images.shape)
