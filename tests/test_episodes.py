"""N-way K-shot Q-query episodes from the minimal split: shapes, labels, provenance, rotations,
determinism (also across processes) and errors.

Provenance is checked by matching pixels: every image of an episode is looked up in the bank of
its part (all drawings there are distinct, asserted below), which tells its character, drawer and
rotation. A synthetic bank whose images encode their own index checks the sampler on its own.
"""

import hashlib
import multiprocessing
import queue
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from metalab.data.classification import (
    ROTATIONS,
    ClassificationTasks,
    class_table,
    omniglot_tasks,
)
from metalab.data.episode import Episode, concat, fixed_episodes, generator_for
from metalab.errors import MetalabError

# ------------------------------------------------------------------------------------- helpers

class Provenance:
    """Maps an image (as sampled: float32 in [0, 1]) back to (character id, drawer, rotation)."""

    def __init__(self, data, characters, rotations):
        bank, table = class_table(data, characters, tuple(rotations))
        self.rotations = tuple(rotations)
        self.size = len(data.images)
        self.lookup = {}
        for row in table.reshape(-1).tolist():
            original = row % self.size
            key = bank[row].numpy().tobytes()
            assert key not in self.lookup, "two drawings of the bank are identical"
            self.lookup[key] = (int(data.character[original]), int(data.drawer[original]),
                                self.rotations[row // self.size])

    def __call__(self, x: torch.Tensor) -> list:
        """x [S, 1, H, W] -> [(character, drawer, rotation)] * S."""
        pixels = (x * 255).round().to(torch.uint8).numpy()
        return [self.lookup[image[0].tobytes()] for image in pixels]


def check_episode(episode: Episode, ways: int, shots: int, queries: int, batch: int, provenance=None,
                  allowed=None, size: int = 28) -> list:
    """Everything an episode promises, task by task; returns the class (character, rotation) of
    each label of each task when `provenance` is given."""
    sx, sy, qx, qy = episode
    assert sx.shape == (batch, ways * shots, 1, size, size) and qx.shape == (batch, ways * queries, 1, size, size)
    assert sy.shape == (batch, ways * shots) and qy.shape == (batch, ways * queries)
    assert sx.dtype == qx.dtype == torch.float32 and sy.dtype == qy.dtype == torch.int64
    assert 0 <= float(sx.min()) and float(sx.max()) <= 1 and 0 <= float(qx.min()) and float(qx.max()) <= 1
    classes = []
    for t in range(batch):
        assert Counter(sy[t].tolist()) == {label: shots for label in range(ways)}
        assert Counter(qy[t].tolist()) == {label: queries for label in range(ways)}
        if provenance is None:
            continue
        origin_s, origin_q = provenance(sx[t]), provenance(qx[t])
        task = []
        for label in range(ways):
            members = [o for o, y in zip(origin_s, sy[t].tolist(), strict=True) if y == label]
            members += [o for o, y in zip(origin_q, qy[t].tolist(), strict=True) if y == label]
            assert len({(c, r) for c, _, r in members}) == 1, "a label mixes classes"
            assert len({d for _, d, _ in members}) == shots + queries, "a drawer is repeated"
            character, _, rotation = members[0]
            if allowed is not None:
                assert character in allowed, "a character from outside the part"
            task.append((character, rotation))
        assert len(set(task)) == ways, "a class appears under two labels"
        classes.append(task)
    return classes


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def index_tasks(num_classes: int, per_class: int, ways: int, shots: int, queries: int) -> ClassificationTasks:
    """A bank of 1x2 images whose two pixels spell their own index (i % 256, i // 256)."""
    index = np.arange(num_classes * per_class)
    bank = torch.from_numpy(np.stack([index % 256, index // 256], axis=1).astype(np.uint8)[:, None, :])
    table = torch.arange(num_classes * per_class).view(num_classes, per_class)
    return ClassificationTasks(bank, table, ways, shots, queries)


def decode_index(x: torch.Tensor) -> torch.Tensor:
    pixels = (x * 255).round().long()
    return pixels[..., 0, 0, 0] + 256 * pixels[..., 0, 0, 1]


@pytest.fixture(scope="module")
def provenance(minimal):
    data, split = minimal
    return {
        "train": Provenance(data, split.train, ROTATIONS),
        "val": Provenance(data, split.val, (0,)),
        "test": Provenance(data, split.test, (0,)),
    }


# --------------------------------------------------------------------------------------- shapes

@pytest.mark.parametrize("part,ways,shots,queries,batch", [
    ("train", 5, 1, 15, 4), ("train", 20, 5, 5, 2), ("val", 5, 5, 15, 3), ("test", 20, 1, 19, 2),
    ("val", 20, 10, 10, 1), ("test", 1, 1, 1, 5),
])
def test_episodes_have_the_promised_shapes_labels_and_provenance(minimal, provenance, part, ways, shots, queries,
                                                                 batch):
    data, split = minimal
    tasks = omniglot_tasks(data, split, part, ways, shots, queries)
    episode = tasks.sample(generator_for(0, 11), batch)
    check_episode(episode, ways, shots, queries, batch, provenance[part], set(split.part(part).tolist()))


def test_episode_helpers_slice_and_concatenate(minimal):
    data, split = minimal
    episode = omniglot_tasks(data, split, "val", 5, 1, 2).sample(generator_for(0, 0), 6)
    assert episode.batch_size == 6
    assert all(torch.equal(a, b) for a, b in zip(episode.task(2), episode.tasks(2, 3), strict=True))
    assert episode.task(2).batch_size == 1
    rebuilt = concat([episode.tasks(0, 2), episode.tasks(2, 6)])
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, episode, strict=True))
    assert all(t.device.type == "cpu" for t in episode.to("cpu"))


def test_sampler_alone_on_an_index_bank():
    tasks = index_tasks(num_classes=12, per_class=9, ways=4, shots=3, queries=5)
    episode = tasks.sample(generator_for(3, 0), 16)
    sx, sy, qx, qy = episode
    assert sx.shape == (16, 12, 1, 1, 2) and qx.shape == (16, 20, 1, 1, 2)
    s_index, q_index = decode_index(sx), decode_index(qx)
    for t in range(16):
        for label in range(4):
            index = torch.cat([s_index[t][sy[t] == label], q_index[t][qy[t] == label]])
            assert len(index) == 8
            assert len(set((index // 9).tolist())) == 1  # one class
            assert len(set((index % 9).tolist())) == 8  # distinct drawers
        assert len(set((s_index[t] // 9).tolist())) == 4
    # support and query are shuffled: the labels are not in blocks
    assert any(sy[t].tolist() != sorted(sy[t].tolist()) for t in range(16))
    assert any(qy[t].tolist() != sorted(qy[t].tolist()) for t in range(16))


def test_labels_are_a_fresh_permutation_per_task():
    """With as many classes as ways every task holds the same classes: only the labels can differ."""
    tasks = index_tasks(num_classes=5, per_class=4, ways=5, shots=1, queries=1)
    episode = tasks.sample(generator_for(0, 5), 400)
    classes = decode_index(episode.support_x) // 4  # [B, 5]
    order = torch.argsort(episode.support_y, dim=1)
    mapping = classes.gather(1, order)  # class of label 0..4, per task
    permutations = Counter(tuple(row) for row in mapping.tolist())
    assert len(permutations) > 80  # of 120; a fixed or sorted mapping gives 1
    for label in range(5):
        per_class = Counter(mapping[:, label].tolist())
        assert set(per_class) == set(range(5)) and min(per_class.values()) > 40  # expected 80 each


def test_label_to_class_mapping_differs_across_tasks_on_real_data(minimal, provenance):
    data, split = minimal
    tasks = omniglot_tasks(data, split, "val", 20, 1, 1)  # every task holds all 20 val characters
    episode = tasks.sample(generator_for(1, 2), 8)
    classes = check_episode(episode, 20, 1, 1, 8, provenance["val"])
    assert len({tuple(task) for task in classes}) == 8
    assert all(task != sorted(task) for task in classes)


# ------------------------------------------------------------------------------------ rotations

def test_train_pool_has_all_four_rotations_and_they_are_rot90(minimal):
    data, split = minimal
    assert omniglot_tasks(data, split, "train", 5, 1, 1).num_classes == 4 * 116
    assert omniglot_tasks(data, split, "val", 5, 1, 1).num_classes == 20
    assert omniglot_tasks(data, split, "test", 5, 1, 1).num_classes == 106
    assert omniglot_tasks(data, split, "val", 5, 1, 1, rotations=ROTATIONS).num_classes == 80
    assert omniglot_tasks(data, split, "train", 5, 1, 1, rotations=(0,)).num_classes == 116

    bank, table = class_table(data, split.train, ROTATIONS)
    assert table.shape == (464, 20) and bank.dtype == torch.uint8
    base = table[:116].numpy()
    assert np.array_equal(data.character[base], np.repeat(split.train[:, None], 20, axis=1))
    assert np.array_equal(data.drawer[base], np.tile(np.arange(1, 21), (116, 1)))
    for j, rotation in enumerate(ROTATIONS):
        rotated = bank[table[j * 116:(j + 1) * 116].reshape(-1)].numpy()
        expected = np.rot90(data.images[base.reshape(-1)], k=rotation // 90, axes=(1, 2))
        assert np.array_equal(rotated, expected), rotation
    # 90 degrees is a quarter turn: four of them are the identity, two are a flip of both axes
    image = data.images[base[0, 0]]
    assert np.array_equal(bank[table[232, 0]].numpy(), image[::-1, ::-1])


def test_train_episodes_use_rotated_classes(minimal, provenance):
    data, split = minimal
    tasks = omniglot_tasks(data, split, "train", 20, 1, 1)
    classes = check_episode(tasks.sample(generator_for(0, 1), 16), 20, 1, 1, 16, provenance["train"],
                            set(split.train.tolist()))
    assert {rotation for task in classes for _, rotation in task} == set(ROTATIONS)


def test_unknown_rotation_is_an_error(minimal):
    data, split = minimal
    with pytest.raises(MetalabError, match="rotation 45"):
        omniglot_tasks(data, split, "train", 5, 1, 1, rotations=(0, 45))


# ---------------------------------------------------------------------------------- determinism

def test_same_seed_and_key_give_identical_episodes(minimal):
    data, split = minimal
    tasks = omniglot_tasks(data, split, "train", 5, 1, 15)
    a = tasks.sample(generator_for(7, 3), 4)
    b = tasks.sample(generator_for(7, 3), 4)
    assert digest(a) == digest(b)
    assert digest(tasks.sample(generator_for(7, 4), 4)) != digest(a)
    assert digest(tasks.sample(generator_for(8, 3), 4)) != digest(a)
    # unaffected by the global torch and numpy state
    torch.manual_seed(123)
    np.random.seed(123)
    assert digest(tasks.sample(generator_for(7, 3), 4)) == digest(a)


def test_generator_for_gives_a_distinct_stream_to_every_seed_and_key():
    def stream(*parts):
        return tuple(torch.rand(4, generator=generator_for(*parts)).tolist())

    streams = {stream(seed, *key) for seed in (0, 1, 5, 2**31, 2**32 + 5, 2**63, 2**64 - 1)
               for key in ((), (0,), (1,), (0, 0), (1, 0), (1, 2**40), (2**32 + 1,))}
    assert len(streams) == 7 * 7
    # the pairs that SeedSequence alone confuses (zero padding, big integers split into words)
    assert stream(3, 1) != stream(3, 1, 0) and stream(3) != stream(3, 0)
    assert stream(2**32 + 5) != stream(5, 1) and stream(5, 2**32 + 1) != stream(2**32 + 5, 1)
    assert stream(3, 1) == stream(3, 1) and stream(np.int64(3), 1) == stream(3, 1)
    for bad in ((-1,), (0, -1), (2**64,), (1.5,)):
        with pytest.raises((ValueError, TypeError)):
            generator_for(*bad)


def _episode_digests(data_dir: str, results) -> None:
    """Spawned: the digests of a few episodes computed from scratch in a fresh interpreter."""
    torch.set_num_threads(1)
    from metalab.data.splits import load_split_data

    data, split = load_split_data("minimal", data_dir, download_missing=False)
    train = omniglot_tasks(data, split, "train", 5, 1, 15)
    test = omniglot_tasks(data, split, "test", 20, 1, 5)
    results.put([digest(train.sample(generator_for(7, 3), 4)), digest(test.sample(generator_for(0, 0), 3)),
                 digest(concat(list(fixed_episodes(test, seed=5, count=7, batch_size=3))))])


def test_episodes_are_identical_in_a_freshly_spawned_process(minimal, omniglot_dir):
    data, split = minimal
    train = omniglot_tasks(data, split, "train", 5, 1, 15)
    test = omniglot_tasks(data, split, "test", 20, 1, 5)
    here = [digest(train.sample(generator_for(7, 3), 4)), digest(test.sample(generator_for(0, 0), 3)),
            digest(concat(list(fixed_episodes(test, seed=5, count=7, batch_size=3))))]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_episode_digests, args=(str(omniglot_dir), results))
    child.start()
    try:
        while True:
            try:
                there = results.get(timeout=1)
                break
            except queue.Empty:
                assert child.is_alive(), "the child died before reporting"
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert there == here


def test_fixed_episodes_do_not_depend_on_batch_size(minimal):
    data, split = minimal
    tasks = omniglot_tasks(data, split, "test", 5, 1, 3)
    reference = concat(list(fixed_episodes(tasks, seed=3, count=10, batch_size=10)))
    assert reference.batch_size == 10
    for batch_size in (1, 3, 4, 50):
        batches = list(fixed_episodes(tasks, seed=3, count=10, batch_size=batch_size))
        assert [b.batch_size for b in batches] == [min(batch_size, 10 - s) for s in range(0, 10, batch_size)]
        assert digest(concat(batches)) == digest(reference)
    # a longer set extends a shorter one; another seed gives other episodes
    longer = concat(list(fixed_episodes(tasks, seed=3, count=16, batch_size=5)))
    assert digest(longer.tasks(0, 10)) == digest(reference)
    assert digest(concat(list(fixed_episodes(tasks, seed=4, count=10)))) != digest(reference)


def test_fixed_episodes_reject_empty_sets(minimal):
    data, split = minimal
    tasks = omniglot_tasks(data, split, "test", 5, 1, 3)
    with pytest.raises(ValueError):
        next(fixed_episodes(tasks, seed=0, count=0))
    with pytest.raises(ValueError):
        next(fixed_episodes(tasks, seed=0, count=5, batch_size=0))


# --------------------------------------------------------------------------------------- errors

def test_more_ways_than_classes_is_an_error(minimal):
    data, split = minimal
    with pytest.raises(MetalabError, match=r"21-way tasks need 21 classes but this split has only 20.*--ways"):
        omniglot_tasks(data, split, "val", 21, 1, 1)
    omniglot_tasks(data, split, "val", 20, 1, 1)  # the edge itself is fine


def test_more_examples_than_drawers_is_an_error(minimal):
    data, split = minimal
    with pytest.raises(MetalabError, match=r"10 \+ 11.*20 drawings per class"):
        omniglot_tasks(data, split, "test", 5, 10, 11)
    omniglot_tasks(data, split, "test", 5, 10, 10)


@pytest.mark.parametrize("ways,shots,queries", [(0, 1, 1), (-1, 1, 1), (5, 0, 1), (5, -2, 1), (5, 1, 0), (5, 1, -3)])
def test_non_positive_sizes_are_errors(minimal, ways, shots, queries):
    data, split = minimal
    with pytest.raises(MetalabError, match="must be positive"):
        omniglot_tasks(data, split, "train", ways, shots, queries)


@pytest.mark.parametrize("batch", [0, -4])
def test_non_positive_batch_is_an_error(minimal, batch):
    data, split = minimal
    tasks = omniglot_tasks(data, split, "val", 5, 1, 1)
    with pytest.raises(MetalabError, match="batch size must be positive"):
        tasks.sample(generator_for(0, 0), batch)


# ------------------------------------------------------------------------------------- property

@st.composite
def episode_sizes(draw):
    ways = draw(st.integers(1, 20))
    shots = draw(st.integers(1, 19))
    queries = draw(st.integers(1, 20 - shots))
    return ways, shots, queries, draw(st.integers(1, 3)), draw(st.integers(0, 2**32))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(sizes=episode_sizes())
def test_property_any_valid_sizes_give_a_well_formed_episode(val_bank, sizes):
    ways, shots, queries, batch, seed = sizes
    bank, table, provenance, allowed = val_bank
    tasks = ClassificationTasks(bank, table, ways, shots, queries)
    episode = tasks.sample(generator_for(seed, 0), batch)
    check_episode(episode, ways, shots, queries, batch, provenance, allowed)
    assert digest(tasks.sample(generator_for(seed, 0), batch)) == digest(episode)


@pytest.fixture(scope="module")
def val_bank(minimal, provenance):
    data, split = minimal
    bank, table = class_table(data, split.val, (0,))
    return bank, table, provenance["val"], set(split.val.tolist())
