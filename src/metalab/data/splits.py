"""Character-disjoint class splits of Omniglot into meta-train, meta-validation and meta-test.

- minimal: the data on this machine. meta-train = characters of images_background_small1 minus 20 held
  out (fixed seed) for meta-validation; meta-test = the 106 characters of the alphabets found only in
  images_background_small2 (Japanese_(katakana), Sanskrit, Tagalog), never used in training.
- lake: the data set's own protocol. meta-train/val = images_background (30 alphabets; 5 alphabets,
  fixed seed, held out for validation), meta-test = images_evaluation (20 alphabets).
- vinyals: all 1,623 characters shuffled with a seed: 1,100 meta-train + 100 meta-val (the usual 1,200
  "train incl. val"), 423 meta-test.
"""

from dataclasses import dataclass

import numpy as np

from metalab.data.omniglot import Omniglot, Preprocessing, load_omniglot
from metalab.errors import MetalabError

SMALL1, SMALL2 = "images_background_small1", "images_background_small2"
BACKGROUND, EVALUATION = "images_background", "images_evaluation"
ARCHIVES_OF_SPLIT = {"minimal": (SMALL1, SMALL2), "lake": (BACKGROUND, EVALUATION),
                     "vinyals": (BACKGROUND, EVALUATION)}
PARTS = ("train", "val", "test")
SPLIT_SEED = 0  # fixes the held-out validation characters / the vinyals shuffle for everyone


@dataclass(frozen=True)
class Split:
    """Character ids (indices into `Omniglot.characters`) of each part."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def part(self, part: str) -> np.ndarray:
        if part not in PARTS:
            raise MetalabError(f"unknown split part {part!r}; choose one of {PARTS}")
        return getattr(self, part)


def make_split(name: str, data: Omniglot) -> Split:
    if name not in ARCHIVES_OF_SPLIT:
        raise MetalabError(f"unknown split {name!r}; choose one of {sorted(ARCHIVES_OF_SPLIT)}")
    rng = np.random.default_rng(SPLIT_SEED)
    alphabet = np.array([data.alphabet_of(c) for c in range(len(data.characters))])
    in_archive = {a: np.array([a in arch for arch in data.archives]) for a in ARCHIVES_OF_SPLIT[name]}
    if name == "minimal":
        train_val = np.flatnonzero(in_archive[SMALL1])
        test = np.flatnonzero(in_archive[SMALL2] & ~np.isin(alphabet, alphabet[train_val]))
        val = np.sort(rng.choice(train_val, size=20, replace=False))
        train = np.setdiff1d(train_val, val)
    elif name == "lake":
        train_val = np.flatnonzero(in_archive[BACKGROUND])
        val_alphabets = rng.choice(np.unique(alphabet[train_val]), size=5, replace=False)
        val = train_val[np.isin(alphabet[train_val], val_alphabets)]
        train = train_val[~np.isin(alphabet[train_val], val_alphabets)]
        test = np.flatnonzero(in_archive[EVALUATION])
    else:
        order = rng.permutation(len(data.characters))
        train, val, test = np.sort(order[:1100]), np.sort(order[1100:1200]), np.sort(order[1200:])
    return Split(name, train, val, test)


def keep_train_alphabets(split: Split, data: Omniglot, count: int) -> Split:
    """The split with meta-train cut down to its first `count` alphabets in name order (nested subsets,
    for data-scaling studies); meta-val and meta-test unchanged."""
    alphabets = sorted({data.alphabet_of(c) for c in split.train})
    if not 1 <= count <= len(alphabets):
        raise MetalabError(f"--train-alphabets must be between 1 and {len(alphabets)} (the alphabets of the "
                           f"{split.name} split's meta-train part) or 0 for all, got {count}")
    kept = [c for c in split.train if data.alphabet_of(c) in alphabets[:count]]
    return Split(split.name, np.array(kept, dtype=split.train.dtype), split.val, split.test)


def alphabet_counts(split: Split, data: Omniglot, part: str) -> dict[str, int]:
    """The alphabets of one part, in name order, with how many of their characters the part holds."""
    counts: dict[str, int] = {}
    for c in split.part(part):
        counts[data.alphabet_of(c)] = counts.get(data.alphabet_of(c), 0) + 1
    return dict(sorted(counts.items()))


def describe(split: Split, data: Omniglot) -> str:
    """Plain-text listing of every part: alphabets, characters, images."""
    images_per_character = np.bincount(data.character, minlength=len(data.characters))
    lines = [f"split {split.name}"]
    for part in PARTS:
        ids = split.part(part)
        counts = alphabet_counts(split, data, part)
        lines.append(f"  {part}: {len(counts)} alphabets, {len(ids)} characters, "
                     f"{int(images_per_character[ids].sum())} images")
        lines += [f"    {a}: {count} characters" for a, count in counts.items()]
    return "\n".join(lines)


def load_split_data(name: str, data_dir=None, download_missing: bool = True,
                    settings: Preprocessing = Preprocessing()) -> tuple[Omniglot, Split]:
    """The drawings a split needs (its archives, fetched if missing, preprocessed by `settings`) and the split
    itself. The split depends on the characters only, so it is the same whatever the preprocessing."""
    if name not in ARCHIVES_OF_SPLIT:
        raise MetalabError(f"unknown split {name!r}; choose one of {sorted(ARCHIVES_OF_SPLIT)}")
    data = load_omniglot(ARCHIVES_OF_SPLIT[name], data_dir, download_missing, settings)
    return data, make_split(name, data)
