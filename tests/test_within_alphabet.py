"""Within-alphabet episodes as a mixture (--within-alphabet P) in the one sampler, data/classification.py."""

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import train_tiny

from metalab.cli.main import main
from metalab.config import Config
from metalab.data.classification import ROTATIONS, ClassificationTasks, omniglot_tasks
from metalab.data.episode import fixed_episodes, generator_for
from metalab.errors import MetalabError
from metalab.problem import build_problem

# sha256 of the episodes below as sampled before --within-alphabet existed (main at 13fc3f0): P=0 must keep them.
EPISODES_BEFORE = "a90d6d677a36129a87089ed74e075155c304836b9e8d73fdbdde05f8661ed0fc"


def _episodes_digest(data, split, within: float) -> str:
    digest = hashlib.sha256()
    tasks = omniglot_tasks(data, split, "train", 5, 1, 2, ROTATIONS, within_alphabet=within)
    for step in range(3):
        for tensor in tasks.sample(generator_for(0, step), 4):
            digest.update(tensor.numpy().tobytes())
    val = omniglot_tasks(data, split, "val", 5, 1, 3, within_alphabet=within)
    for episode in fixed_episodes(val, 1_000_003, 6, batch_size=3):
        for tensor in episode:
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def test_probability_zero_gives_the_episodes_of_before(minimal):
    data, split = minimal
    assert _episodes_digest(data, split, 0.0) == EPISODES_BEFORE
    assert _episodes_digest(data, split, 1.0) != EPISODES_BEFORE  # the digest does see the option


def _labelled_tasks(within: float, ways: int = 3, group_sizes=(6, 6, 6, 2)) -> ClassificationTasks:
    """Tasks whose every image holds its class id as pixel value: classes [C], grouped by group_sizes."""
    groups = torch.repeat_interleave(torch.arange(len(group_sizes)), torch.tensor(group_sizes))  # [C]
    classes, drawers = len(groups), 4
    bank = torch.arange(classes, dtype=torch.uint8).repeat_interleave(drawers).view(-1, 1, 1).expand(-1, 2, 2)
    table = torch.arange(classes * drawers).view(classes, drawers)
    return ClassificationTasks(bank.contiguous(), table, ways, shots=1, queries=2, class_groups=groups,
                               within_group=within)


def _task_groups(tasks: ClassificationTasks, count: int, seed: int = 0) -> list[set[int]]:
    """The set of groups of the classes of each of `count` tasks, read from the images' pixels."""
    episode = tasks.sample(generator_for(seed, 3), count)
    pixels = torch.cat([episode.support_x, episode.query_x], dim=1)[:, :, 0, 0, 0]  # [B, S]
    classes = torch.round(pixels * 255).long()
    return [set(tasks.class_groups[row].tolist()) for row in classes]


def test_probability_one_draws_every_task_from_one_group_that_can_host_it():
    groups = _task_groups(_labelled_tasks(1.0), 500)
    assert all(len(g) == 1 for g in groups)
    drawn = [g.pop() for g in groups]
    assert set(drawn) == {0, 1, 2}  # group 3 has 2 classes: it cannot host a 3-way task
    assert np.bincount(drawn).min() > 500 / 3 - 50  # the hosts are equally likely


def test_probability_one_half_makes_about_half_the_tasks_within_one_group():
    count = 2000
    same = np.mean([len(g) == 1 for g in _task_groups(_labelled_tasks(0.5), count)])
    # a mixed task of 3 of the 20 classes falls in one group by chance with probability 3 * C(6,3) / C(20,3)
    chance = 3 * 20 / 1140
    expected = 0.5 + 0.5 * chance
    assert abs(same - expected) < 4 * np.sqrt(expected * (1 - expected) / count)
    mixed = np.mean([len(g) == 1 for g in _task_groups(_labelled_tasks(0.0), count)])
    assert abs(mixed - chance) < 4 * np.sqrt(chance * (1 - chance) / count)


def test_episodes_are_fixed_by_the_seed():
    tasks = _labelled_tasks(0.5)
    first, again = tasks.sample(generator_for(4, 1), 8), tasks.sample(generator_for(4, 1), 8)
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_rotated_views_of_an_alphabet_are_alphabets_of_their_own(minimal):
    data, split = minimal
    tasks = omniglot_tasks(data, split, "train", 5, 1, 2, ROTATIONS, within_alphabet=1.0)
    episode = tasks.sample(generator_for(0, 11), 40)
    # Each image found among the bank's views by its pixels: its character and view, independently of the tables.
    lookup = {row.tobytes(): i for i, row in enumerate(tasks.bank.numpy().reshape(len(tasks.bank), -1))}
    images = torch.cat([episode.support_x, episode.query_x], dim=1)
    pixels = np.rint(images.numpy() * 255).astype(np.uint8).reshape(*images.shape[:2], -1)
    seen = set()
    for task in pixels:
        index = np.array([lookup[p.tobytes()] for p in task])
        alphabets = {data.alphabet_of(c) for c in data.character[index % len(data.images)]}
        views = set((index // len(data.images)).tolist())
        assert len(alphabets) == 1 and len(views) == 1
        seen |= {(alphabets.pop(), views.pop())}
    assert len(seen) > 10  # many of the 5 alphabets x 4 views host tasks


def test_held_out_parts_are_within_alphabet_when_evaluation_asks(minimal, omniglot_dir):
    data, split = minimal
    problem = build_problem(Config(), omniglot_dir, parts=("val",), held_out_within_alphabet=1.0)
    episode = problem.tasks["val"].sample(generator_for(0, 1), 6)
    lookup = {row.tobytes(): i for i, row in enumerate(data.images.reshape(len(data.images), -1))}
    pixels = np.rint(episode.query_x.numpy() * 255).astype(np.uint8).reshape(6, episode.query_x.shape[1], -1)
    for task in pixels:
        # Korean alone of the validation part's alphabets holds 5 characters (test_alphabet_tasks.py)
        assert {data.alphabet_of(data.character[lookup[p.tobytes()]]) for p in task} == {"Korean"}


@pytest.mark.parametrize("probability", [-0.1, 1.5, float("nan")])
def test_a_probability_outside_zero_one_is_a_one_line_error(probability):
    with pytest.raises(MetalabError, match="--within-alphabet") as error:
        Config(within_alphabet=probability)
    assert "\n" not in str(error.value)
    with pytest.raises(MetalabError, match="--within-alphabet"):
        _labelled_tasks(probability)


def test_no_alphabet_large_enough_is_an_error(minimal):
    data, split = minimal
    with pytest.raises(MetalabError, match="no alphabet of this part holds 20 characters"):
        omniglot_tasks(data, split, "val", 20, 1, 1, within_alphabet=0.5)
    omniglot_tasks(data, split, "val", 20, 1, 1, within_alphabet=0.0)  # mixed 20-way validation stays possible


def test_the_option_is_omniglots_alone():
    with pytest.raises(MetalabError, match="--within-alphabet"):
        Config(problem="sinusoid", within_alphabet=0.5)


def test_train_and_eval_commands_take_the_option(tmp_path, omniglot_dir, capsys):
    out = tmp_path / "run"
    train_tiny(out, omniglot_dir, "omniglot-demo", "--within-alphabet", "1")
    assert main(["eval", str(out / "best.pt"), "--data-dir", str(omniglot_dir), "--episodes", "4", "--threads", "1",
                 "--part", "val", "--within-alphabet", "1", "--json", str(tmp_path / "r.json")]) == 0
    assert "4 val episodes" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["within_alphabet"] == 1.0
    assert main(["eval", str(out / "best.pt"), "--data-dir", str(omniglot_dir), "--within-alphabet", "1.5"]) == 2
    assert "--within-alphabet" in capsys.readouterr().err
