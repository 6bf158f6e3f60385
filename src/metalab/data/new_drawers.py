"""New drawers from strokes (`--stroke-drawers K`): K re-drawings of every meta-training drawing.

A re-drawing is the drawing's own pen trajectory (data/strokes.py) changed at the stroke level
(data/stroke_augment.py) and rendered again (data/render.py), then shrunk to 28x28 exactly as the image
bank's drawings are. It joins its character's class as one more drawer, so a class of 20 drawings holds
20 * (1 + K), and the rotations, mirrors and image-level distortions act on it like on any drawing. Where the
image-level distortions bend finished ink, a re-drawing varies what differs between two people drawing one
character: the pen, a smooth wobble of the hand, where and how big each stroke is put down.

REDRAWING, chosen by looking at re-drawings beside the 20 real drawers of the same characters (pixels of the
105x105 drawing): a pen of 3.5 to 6.5 pixels (the archive's drawings match a pen of 5); jitter of 2 pixels
smoothed over 20 samples, a slow wobble like a hand's (over 5 samples, as data/stroke_augment.py's default, the
ink frays, which no real drawer does); each stroke turned by up to 0.15 radians, scaled by up to exp(+-0.15) and
moved by up to 3 pixels about its own centroid, which changes a drawing's proportions as drawers do while
keeping the strokes that touch in touch. No stroke is left out: many characters differ from another of their
alphabet by one stroke (a dot, a bar), so a drawing without it may be another character, not a new drawer.

Only meta-train characters' strokes are read (load_strokes refuses the others'), and only the meta-train part
gets re-drawings. Each re-drawing depends on (seed, character, drawer, its number) alone: not on K, the
split's other characters or the order of rendering, so one seed gives one bank and a resumed run rebuilds it.
A task may hold a drawing and one of its re-drawings (the sampler draws distinct columns of a class, not distinct
source drawings), which two real drawers' images never are.
"""

import hashlib

import numpy as np

from metalab.data.omniglot import Omniglot, Preprocessing
from metalab.data.render import small_drawing
from metalab.data.splits import Split
from metalab.data.stroke_augment import StrokeAugment, augment_strokes
from metalab.data.strokes import ensure_train_strokes, load_strokes
from metalab.errors import MetalabError

REDRAWING = StrokeAugment(pen_width=(3.5, 6.5), jitter=2.0, jitter_span=20, stroke_rotation=0.15,
                          stroke_log_scale=0.15, stroke_shift=3.0, dropout=0.0)


def with_new_drawers(data: Omniglot, split: Split, count: int, seed: int, data_dir=None,
                     download_missing: bool = True, settings: Preprocessing = Preprocessing()) -> Omniglot:
    """The drawings of the split's meta-train characters, each followed in its class by `count` re-drawings.

    data:   the image bank of the split (`settings` must be the preprocessing it was built with)
    Returns an Omniglot holding the meta-train characters alone (character ids still index data.characters),
    sorted by (character, drawer): drawer d's own image keeps number d, its re-drawing r (1..count) is drawer
    d + r * D, D = the largest drawer number. images: uint8 [train drawings * (1 + count), size, size].
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise MetalabError(f"--stroke-drawers must be an integer >= 0, got {count!r}")
    originals = np.flatnonzero(np.isin(data.character, split.train))  # [M]
    if count == 0:
        return Omniglot(data.images[originals], data.character[originals], data.drawer[originals],
                        data.characters, data.archives)
    ensure_train_strokes(data, split, data_dir, download_missing, "--stroke-drawers")
    strokes = {(d.character, d.drawer): d.strokes
               for d in load_strokes(data, split, "train", data_dir, download_missing=False)}
    stride = int(data.drawer.max())
    images, character, drawer = [data.images[originals]], [data.character[originals]], [data.drawer[originals]]
    for number in range(1, count + 1):
        redrawn = []
        for i in originals:
            name, who = data.characters[data.character[i]], int(data.drawer[i])
            if (name, who) not in strokes:
                raise MetalabError(f"the strokes archive holds no drawing of {name} by drawer {who}; it is not the "
                                   "official one: delete it and run `metalab data fetch --all`")
            redrawn.append(redraw(strokes[name, who], seed, name, who, number, settings))
        images.append(np.stack(redrawn))
        character.append(data.character[originals])
        drawer.append(data.drawer[originals] + number * stride)
    character, drawer = np.concatenate(character), np.concatenate(drawer)
    order = np.lexsort((drawer, character))
    return Omniglot(np.concatenate(images)[order], character[order], drawer[order], data.characters, data.archives)


def redraw(strokes: tuple[np.ndarray, ...], seed: int, character: str, drawer: int, number: int,
           settings: Preprocessing = Preprocessing()) -> np.ndarray:
    """Re-drawing `number` of one drawing (its strokes, each [P, 3]) -> uint8 [size, size], ink high."""
    changed, pen_width = augment_strokes(strokes, redrawing_generator(seed, character, drawer, number), REDRAWING)
    return small_drawing(changed, settings, pen_width)


def redrawing_generator(seed: int, character: str, drawer: int, number: int) -> np.random.Generator:
    """The random numbers of one re-drawing, from (seed, character name, drawer, number) alone."""
    name = int.from_bytes(hashlib.sha256(character.encode()).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, name, drawer, number]))
