"""New characters from strokes (`--stroke-characters M`): M meta-training classes that no drawer ever drew, each
joined from halves of two characters of one meta-train alphabet.

Lake et al.'s Bayesian program learning makes new characters of an alphabet from the parts of its characters;
this is its cheapest form. New character i takes the meta-train character A that is i-th in id order (cycling),
a partner B drawn from A's other meta-train characters, and a cut, vertical or horizontal (drawn). Drawer d's
drawing of it is the half of A_d's ink before the cut (left or top) joined to the half of B_d's ink after it
(right or bottom): each drawing cut at the centre of its own ink's extent, B's half moved so that its cut lies
on A's and the two halves' extents share a centre along the cut. A stroke crossing the cut is clipped at it, so
the halves meet. Cut where each drawer's own ink is, the 20 drawings of a new character differ as those drawers'
drawings of A and B do, and they are rendered with the pen of data/render.py like a re-drawing.

Only meta-train characters' strokes are read. A new character joins A's alphabet (within-alphabet tasks draw it
with that alphabet's characters) and gets the rotations and distortions of any meta-train class. Character i
depends on (seed, i, the split) alone, not on M: a longer list starts with the shorter one.
"""

import dataclasses

import numpy as np

from metalab.data.omniglot import Omniglot, Preprocessing
from metalab.data.render import small_drawing
from metalab.data.splits import Split
from metalab.data.strokes import ensure_train_strokes, load_strokes
from metalab.errors import MetalabError

Strokes = tuple[np.ndarray, ...]  # one drawing: each stroke float64 [P, 3] of (x, y, t), y counted upward


def with_new_characters(data: Omniglot, split: Split, count: int, seed: int, data_dir=None,
                        download_missing: bool = True, settings: Preprocessing = Preprocessing()
                        ) -> tuple[Omniglot, Split]:
    """The bank and split with `count` new meta-train characters after the others.

    Returns (data', split'): data' holds data's drawings, then D drawings of each new character, named
    "Alphabet/recombinedNNNN" (character ids len(data.characters) onward, drawers those of its parents);
    split' is split with those ids added to its meta-train part. `settings`: the bank's preprocessing.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise MetalabError(f"--stroke-characters must be an integer >= 0, got {count!r}")
    if count == 0:
        return data, split
    ensure_train_strokes(data, split, data_dir, download_missing, "--stroke-characters")
    drawings: dict[int, dict[int, Strokes]] = {}
    index = {name: c for c, name in enumerate(data.characters)}
    for drawing in load_strokes(data, split, "train", data_dir, download_missing=False):
        drawings.setdefault(index[drawing.character], {})[drawing.drawer] = drawing.strokes
    parents = sorted(drawings)
    names, images, character, drawer = list(data.characters), [data.images], [data.character], [data.drawer]
    for number in range(count):
        first, second, axis = recombination(parents, data, seed, number)
        drawers = sorted(drawings[first])
        if sorted(drawings[second]) != drawers:
            raise MetalabError(f"{data.characters[first]} and {data.characters[second]} have strokes of different "
                               "drawers; the strokes archive is not the official one: delete it and run `metalab "
                               "data fetch --all`")
        images.append(np.stack([small_drawing(joined(drawings[first][d], drawings[second][d], axis), settings)
                                for d in drawers]))
        character.append(np.full(len(drawers), len(names), dtype=np.int64))
        drawer.append(np.array(drawers, dtype=np.int64))
        names.append(f"{data.alphabet_of(first)}/recombined{number:04d}")
    new = np.arange(len(data.characters), len(names), dtype=np.int64)
    bank = Omniglot(np.concatenate(images), np.concatenate(character), np.concatenate(drawer), tuple(names),
                    data.archives + (frozenset(),) * count)
    return bank, dataclasses.replace(split, train=np.concatenate([split.train, new]))


def recombination(parents: list[int], data: Omniglot, seed: int, number: int) -> tuple[int, int, int]:
    """New character `number`'s (A, B, axis): A the parents' (number mod len)-th, B another character of A's
    alphabet among the parents, axis 0 for a vertical cut (x), 1 for a horizontal one (y)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, number, 0x5A17]))
    first = parents[number % len(parents)]
    partners = [c for c in parents if c != first and data.alphabet_of(c) == data.alphabet_of(first)]
    if not partners:
        raise MetalabError(f"--stroke-characters joins two characters of one alphabet, but {data.alphabet_of(first)} "
                           "has one meta-train character: train on more of its characters or drop the option")
    return first, partners[rng.integers(len(partners))], int(rng.integers(2))


def joined(first: Strokes, second: Strokes, axis: int) -> Strokes:
    """first's ink before the cut along `axis` (x: left; y, counted upward: top) and second's after it, second's
    half moved onto first's cut and centred with it along the other axis."""
    before = -1 if axis == 0 else 1  # which side of the cut "before" is: x below it, y above it
    first_centre, second_centre = _extent_centre(first), _extent_centre(second)
    shift = np.append(first_centre - second_centre, 0.0)  # [3]: the pen's times stay as they were
    return tuple(_side(first, axis, first_centre[axis], before) +
                 [stroke + shift for stroke in _side(second, axis, second_centre[axis], -before)])


def _extent_centre(strokes: Strokes) -> np.ndarray:
    """[2] (x, y): the centre of the box around the drawing's ink, where it is cut and what it is centred on."""
    points = np.concatenate(strokes)[:, :2]
    return (points.min(0) + points.max(0)) / 2


def _side(strokes: Strokes, axis: int, cut: float, side: int) -> list[np.ndarray]:
    """The pieces of the strokes with side * (coordinate - cut) >= 0, each run of such samples a stroke of its own,
    extended to the cut where the pen crossed it."""
    pieces = []
    for stroke in strokes:
        inside = side * (stroke[:, axis] - cut) >= 0
        run: list[np.ndarray] = []
        for k in range(len(stroke)):
            if inside[k] and not run and k > 0:  # entering across the cut
                run.append(_crossing(stroke[k - 1], stroke[k], axis, cut))
            if inside[k]:
                run.append(stroke[k])
            elif run:  # leaving across the cut
                run.append(_crossing(stroke[k - 1], stroke[k], axis, cut))
                pieces.append(np.array(run))
                run = []
        if run:
            pieces.append(np.array(run))
    return pieces


def _crossing(a: np.ndarray, b: np.ndarray, axis: int, cut: float) -> np.ndarray:
    """The sample where the segment a -> b ([3] each, on either side of the cut) meets it."""
    fraction = (cut - a[axis]) / (b[axis] - a[axis])
    return a + fraction * (b - a)
