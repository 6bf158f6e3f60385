"""Character-disjoint splits: `minimal` on the real archives, `lake` and `vinyals` on a synthetic
Omniglot of the full data set's shape (we hold no copy of the full archives)."""

import numpy as np
import pytest

from metalab.data.omniglot import Omniglot
from metalab.data.splits import (
    BACKGROUND,
    EVALUATION,
    PARTS,
    SMALL1,
    SMALL2,
    describe,
    keep_train_alphabets,
    make_split,
)
from metalab.errors import MetalabError

# The 20 held-out validation characters of `minimal` (SPLIT_SEED = 0). Pinned: a change here silently
# changes every published minimal-split number, so it must be a deliberate one.
MINIMAL_VAL = [
    "Balinese/character03", "Balinese/character05", "Balinese/character10", "Balinese/character22",
    "Early_Aramaic/character09", "Early_Aramaic/character14", "Greek/character15", "Greek/character19",
    "Korean/character03", "Korean/character06", "Korean/character09", "Korean/character13",
    "Korean/character15", "Korean/character27", "Korean/character30", "Korean/character33",
    "Latin/character07", "Latin/character18", "Latin/character25", "Latin/character26",
]


def images_of(data: Omniglot, ids) -> int:
    return int(np.isin(data.character, ids).sum())


def alphabets_of(data: Omniglot, ids) -> set[str]:
    return {data.alphabet_of(int(c)) for c in ids}


# -------------------------------------------------------------------------------------- minimal

def test_minimal_counts(minimal):
    data, split = minimal
    counts = {part: (len(split.part(part)), images_of(data, split.part(part))) for part in PARTS}
    assert counts == {"train": (116, 2320), "val": (20, 400), "test": (106, 2120)}
    assert split.name == "minimal"


def test_minimal_parts_are_disjoint_sorted_and_cover_the_right_characters(minimal):
    data, split = minimal
    train, val, test = (set(split.part(p).tolist()) for p in PARTS)
    assert not (train & val) and not (train & test) and not (val & test)
    for part in PARTS:
        ids = split.part(part)
        assert np.all(np.diff(ids) > 0) and ids.min() >= 0 and ids.max() < len(data.characters)
    small1 = {c for c in range(len(data.characters)) if SMALL1 in data.archives[c]}
    assert len(small1) == 136 and train | val == small1
    assert alphabets_of(data, split.test) == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert all(data.archives[c] == {SMALL2} for c in test)
    # no test alphabet is seen in training, and everything of the data is used once
    assert not alphabets_of(data, test) & alphabets_of(data, train | val)
    assert len(train | val | test) == len(data.characters) == 242


def test_minimal_validation_characters_are_pinned(minimal):
    data, split = minimal
    assert [data.characters[c] for c in split.val] == MINIMAL_VAL


def test_train_alphabets_keeps_nested_subsets_of_meta_train_only(minimal):
    data, split = minimal
    names = ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    previous = set()
    for count in range(1, 6):
        cut = keep_train_alphabets(split, data, count)
        kept = set(cut.train.tolist())
        assert alphabets_of(data, kept) == set(names[:count])
        # every meta-train character of those alphabets, no other; each subset contains the one before
        assert kept == {c for c in split.train.tolist() if data.alphabet_of(c) in names[:count]}
        assert previous < kept
        previous = kept
        assert np.array_equal(cut.val, split.val) and np.array_equal(cut.test, split.test)
    assert np.array_equal(keep_train_alphabets(split, data, 5).train, split.train)
    for bad in (0, 6):
        with pytest.raises(MetalabError, match="--train-alphabets must be between 1 and 5"):
            keep_train_alphabets(split, data, bad)


def test_describe_lists_every_part(minimal):
    data, split = minimal
    text = describe(split, data)
    assert "train: 5 alphabets, 116 characters, 2320 images" in text
    assert "val: 5 alphabets, 20 characters, 400 images" in text
    assert "test: 3 alphabets, 106 characters, 2120 images" in text
    assert "Tagalog: 17 characters" in text


def test_unknown_split_or_part_is_an_error(minimal):
    data, split = minimal
    with pytest.raises(MetalabError, match="unknown split"):
        make_split("nonsense", data)
    with pytest.raises(MetalabError, match="unknown split part"):
        split.part("validation")


# ------------------------------------------------------------------- synthetic full Omniglot

def synthetic_full_omniglot(drawers: int = 2) -> Omniglot:
    """1,623 fake characters over 50 alphabets: 30 (964 characters) tagged images_background and
    20 (659) images_evaluation, with names interleaved so archive order is not name order."""
    rng = np.random.default_rng(1234)
    sizes_background = [33] * 4 + [32] * 26  # 964
    sizes_evaluation = [33] * 19 + [32]  # 659
    alphabet_names = [f"Alphabet_{i:02d}" for i in rng.permutation(50)]
    entries = []
    for a, size in enumerate(sizes_background + sizes_evaluation):
        archive = BACKGROUND if a < 30 else EVALUATION
        entries += [(f"{alphabet_names[a]}/character{c + 1:02d}", archive) for c in range(size)]
    entries.sort()
    characters = tuple(name for name, _ in entries)
    archives = tuple(frozenset({archive}) for _, archive in entries)
    character = np.repeat(np.arange(len(characters)), drawers)
    return Omniglot(images=np.zeros((len(character), 2, 2), np.uint8), character=character,
                    drawer=np.tile(np.arange(1, drawers + 1), len(characters)), characters=characters,
                    archives=archives)


@pytest.fixture(scope="module")
def full():
    data = synthetic_full_omniglot()
    assert len(data.characters) == 1623
    assert sum(BACKGROUND in a for a in data.archives) == 964
    assert len({data.alphabet_of(c) for c in range(1623)}) == 50
    return data


def test_vinyals_split_counts_and_disjointness(full):
    split = make_split("vinyals", full)
    assert (len(split.train), len(split.val), len(split.test)) == (1100, 100, 423)
    everything = np.concatenate([split.train, split.val, split.test])
    assert np.array_equal(np.sort(everything), np.arange(1623))  # disjoint and complete
    # a seeded shuffle of all characters: both archives contribute to every part
    for part in PARTS:
        assert {next(iter(full.archives[c])) for c in split.part(part)} == {BACKGROUND, EVALUATION}


def test_lake_split_is_alphabet_disjoint_and_tests_on_the_evaluation_archive(full):
    split = make_split("lake", full)
    background = {c for c in range(1623) if BACKGROUND in full.archives[c]}
    evaluation = {c for c in range(1623) if EVALUATION in full.archives[c]}
    train, val, test = (set(split.part(p).tolist()) for p in PARTS)
    assert test == evaluation and len(test) == 659
    assert train | val == background and not train & val
    assert len(alphabets_of(full, val)) == 5 and len(alphabets_of(full, train)) == 25
    assert len(alphabets_of(full, test)) == 20
    a_train, a_val, a_test = (alphabets_of(full, ids) for ids in (train, val, test))
    assert not a_train & a_val and not a_train & a_test and not a_val & a_test
    # whole alphabets move to validation: every character of a validation alphabet is in val
    for c in background:
        assert (c in val) == (full.alphabet_of(c) in a_val)
    assert len(train) + len(val) == 964


@pytest.mark.parametrize("name", ["minimal", "lake", "vinyals"])
def test_splits_are_deterministic(name, full, minimal):
    data = minimal[0] if name == "minimal" else full
    first, second = make_split(name, data), make_split(name, data)
    for part in PARTS:
        assert np.array_equal(first.part(part), second.part(part))
