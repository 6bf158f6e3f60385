"""Within-alphabet episodes (data/classification.alphabet_tasks) and the alphabets of a split's part."""

import numpy as np
import pytest

from metalab.data.classification import alphabet_tasks
from metalab.data.episode import generator_for
from metalab.data.splits import alphabet_counts
from metalab.errors import MetalabError


def test_alphabet_counts_of_the_minimal_split(minimal):
    data, split = minimal
    assert alphabet_counts(split, data, "val") == {"Balinese": 4, "Early_Aramaic": 2, "Greek": 2, "Korean": 8,
                                                   "Latin": 4}
    assert alphabet_counts(split, data, "test") == {"Japanese_(katakana)": 47, "Sanskrit": 42, "Tagalog": 17}
    for part in ("train", "val", "test"):
        assert sum(alphabet_counts(split, data, part).values()) == len(split.part(part))


@pytest.mark.parametrize("part, alphabet, ways", [("test", "Sanskrit", 5), ("test", "Tagalog", 5),
                                                  ("val", "Korean", 5), ("test", "Japanese_(katakana)", 20)])
def test_every_image_is_a_drawing_of_that_alphabet_in_that_part(minimal, part, alphabet, ways):
    data, split = minimal
    tasks = alphabet_tasks(data, split, part, alphabet, ways, shots=1, queries=3)
    episode = tasks.sample(generator_for(0, 7), 4)
    assert episode.support_x.shape == (4, ways, 1, 28, 28) and episode.query_x.shape == (4, 3 * ways, 1, 28, 28)
    # Find each image among all the drawings by its pixels: its character, independently of the sampler's tables.
    flat = data.images.reshape(len(data.images), -1)
    lookup = {row.tobytes(): i for i, row in enumerate(flat)}

    def characters(x):  # [B, n, 1, 28, 28] -> [B, n] character ids
        pixels = np.rint(x.numpy() * 255).astype(np.uint8).reshape(*x.shape[:2], -1)
        return np.array([[data.character[lookup[p.tobytes()]] for p in task] for task in pixels])

    support, query = characters(episode.support_x), characters(episode.query_x)
    allowed = {c for c in split.part(part) if data.alphabet_of(c) == alphabet}
    assert set(support.ravel()) | set(query.ravel()) <= allowed
    for b in range(4):
        by_label = {int(y): c for y, c in zip(episode.support_y[b], support[b])}
        assert len(set(by_label.values())) == ways  # N distinct characters, one per label
        assert all(by_label[int(y)] == c for y, c in zip(episode.query_y[b], query[b]))


def test_too_few_characters_in_the_alphabet_is_a_clear_error(minimal):
    data, split = minimal
    with pytest.raises(MetalabError, match="5-way tasks within Greek need 5 of its characters, but the minimal "
                                           "split's val part holds 2"):
        alphabet_tasks(data, split, "val", "Greek", 5, 1, 15)
    with pytest.raises(MetalabError, match="holds 0"):
        alphabet_tasks(data, split, "test", "Greek", 5, 1, 15)
