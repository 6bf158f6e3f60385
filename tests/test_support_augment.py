"""Test-time support augmentation (data/support_augment.py, `metalab eval --support-augment`)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import train_tiny

from metalab import checkpoint
from metalab.cli.main import main
from metalab.config import preset
from metalab.data.classification import ClassificationTasks
from metalab.data.episode import concat, fixed_episodes, generator_for
from metalab.data.support_augment import SupportAugmentedTasks, SupportCopies, augment_support
from metalab.errors import MetalabError
from metalab.methods.learner import classification
from metalab.methods.protonet import PrototypicalNetwork, embedding_network
from metalab.methods.registry import make_method
from metalab.problem import image_learner

WAYS, SHOTS, QUERIES = 5, 2, 3


def random_tasks(classes=8, drawers=6):
    """Tasks over random 28x28 drawings: every image distinct, so a misplaced copy shows."""
    bank = torch.randint(0, 256, (classes * drawers, 28, 28), generator=torch.Generator().manual_seed(0),
                         dtype=torch.uint8)
    return ClassificationTasks(bank, torch.arange(classes * drawers).view(classes, drawers), WAYS, SHOTS, QUERIES)


def episodes(tasks, seed=0, count=6):
    return concat(list(fixed_episodes(tasks, seed, count, batch_size=4)))


@pytest.mark.parametrize("copies", [1, 3])
def test_the_support_grows_by_copies_with_labels_repeated_and_queries_untouched(copies):
    plain = episodes(random_tasks())
    grown = episodes(SupportAugmentedTasks(random_tasks(), SupportCopies(copies)))
    size = WAYS * SHOTS
    assert grown.support_x.shape == (6, size * (1 + copies), 1, 28, 28)
    assert grown.support_y.shape == (6, size * (1 + copies))
    assert torch.equal(grown.support_x[:, :size], plain.support_x)  # the originals first, untouched
    for copy in range(1, copies + 1):
        assert torch.equal(grown.support_y[:, copy * size : (copy + 1) * size], plain.support_y)
        assert not torch.equal(grown.support_x[:, copy * size : (copy + 1) * size], plain.support_x)
    assert torch.equal(grown.query_x, plain.query_x) and torch.equal(grown.query_y, plain.query_y)
    assert grown.support_x.min() >= 0 and grown.support_x.max() <= 1


def test_each_copy_is_a_distortion_of_its_own_image():
    """At a vanishing strength the maps are near the identity: copy j of image i is image i again, in that order."""
    plain = episodes(random_tasks())
    grown = episodes(SupportAugmentedTasks(random_tasks(), SupportCopies(2, strength=1e-6)))
    for copy in (1, 2):
        torch.testing.assert_close(grown.support_x[:, copy * WAYS * SHOTS : (copy + 1) * WAYS * SHOTS],
                                   plain.support_x, atol=1e-4, rtol=0)


def test_the_seed_fixes_the_copies_and_other_seeds_change_them():
    tasks = SupportAugmentedTasks(random_tasks(), SupportCopies(2))
    first, again, other = episodes(tasks, 0), episodes(tasks, 0), episodes(tasks, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first.support_x, other.support_x)


def test_no_copies_is_the_episode_itself():
    episode = random_tasks().sample(generator_for(0, 1), 3)
    generator = generator_for(0, 2)
    state = generator.get_state()
    assert augment_support(episode, generator, SupportCopies()) is episode
    assert torch.equal(generator.get_state(), state)  # nothing drawn


@pytest.mark.parametrize("copies, strength, kind", [(-1, 1.0, "affine"), (1.5, 1.0, "affine"), (True, 1.0, "affine"),
                                                    (1, 0.0, "affine"), (1, 2.5, "affine"), (1, float("nan"), "affine"),
                                                    (1, 1.0, "elastic"), (1, 0.5, "shift")])
def test_bad_settings_are_one_line_errors(copies, strength, kind):
    with pytest.raises(MetalabError, match="--support-augment") as error:
        SupportCopies(copies, strength, kind)
    assert "\n" not in str(error.value)


def test_shift_copies_are_their_images_moved_by_whole_pixels_in_order():
    """Copy k: the k-th of the 8 neighbouring positions (right, left, down, up, diagonals), 2 pixels from copy 9 on;
    checked against numpy's roll with the wrapped-around rows and columns blanked."""
    episode = random_tasks().sample(generator_for(0, 1), 2)
    generator = generator_for(0, 2)
    state = generator.get_state()
    grown = augment_support(episode, generator, SupportCopies(10, kind="shift"))
    assert torch.equal(generator.get_state(), state)  # nothing drawn: the copies are fixed
    moves = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1), (0, 2), (0, -2)]
    size = WAYS * SHOTS
    for copy, (rows, columns) in enumerate(moves, 1):
        expected = np.roll(episode.support_x.numpy(), (rows, columns), axis=(-2, -1))
        if rows:
            expected[..., slice(0, rows) if rows > 0 else slice(rows, None), :] = 0
        if columns:
            expected[..., :, slice(0, columns) if columns > 0 else slice(columns, None)] = 0
        np.testing.assert_array_equal(grown.support_x[:, copy * size:(copy + 1) * size].numpy(), expected)
        assert torch.equal(grown.support_y[:, copy * size:(copy + 1) * size], episode.support_y)
    assert torch.equal(grown.support_x[:, :size], episode.support_x) and torch.equal(grown.query_x, episode.query_x)


def test_prototypes_of_exact_copies_are_the_prototypes_of_the_originals():
    """Prototypical networks average each class's embeddings: copies that equal their image change no logit
    (an independent check that a method takes the grown support with its labels paired right)."""
    torch.manual_seed(0)
    config = preset("omniglot-5w1s-protonet").replace(ways=WAYS, hidden=4, embedding="conv4")
    method = PrototypicalNetwork.from_config(config, classification(embedding_network(config, (1, 28, 28), WAYS)))
    meta = method.init_meta()
    episode = random_tasks().sample(generator_for(0, 1), 3)
    copies = episode._replace(support_x=episode.support_x.repeat(1, 3, 1, 1, 1),
                              support_y=episode.support_y.repeat(1, 3))
    torch.testing.assert_close(method.scores(meta, copies, 0), method.scores(meta, episode, 0))


@pytest.mark.parametrize("name", ["maml", "average", "attention", "lstm", "mann", "metanet"])
def test_learners_of_any_support_size_take_the_grown_support(name):
    torch.manual_seed(0)
    config = preset(f"omniglot-5w1s-{name}").replace(shots=SHOTS, hidden=4, width=8, memory_slots=8)
    method = make_method(config, image_learner(config))
    episode = random_tasks().sample(generator_for(0, 1), 2)
    scores = method.scores(method.init_meta(), augment_support(episode, generator_for(0, 2), SupportCopies(2)), 1)
    assert scores.shape[-1] == 2 and torch.isfinite(scores).all()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, omniglot_dir):
    return train_tiny(tmp_path_factory.mktemp("tta") / "run", omniglot_dir)


def evaluate(trained, omniglot_dir, tmp_path, name, *flags):
    scores, report = tmp_path / f"{name}.npy", tmp_path / f"{name}.json"
    code = main(["eval", str(trained), "--data-dir", str(omniglot_dir), "--episodes", "6", "--threads", "1", "--part",
                 "val", "--save-scores", str(scores), "--json", str(report), *flags])
    return code, (np.load(scores) if code == 0 else None), (json.loads(report.read_text()) if code == 0 else None)


def test_eval_with_no_copies_scores_bitwise_alike_and_copies_save_scores(trained, omniglot_dir, tmp_path, capsys):
    _, plain, _ = evaluate(trained, omniglot_dir, tmp_path, "plain")
    _, zero, _ = evaluate(trained, omniglot_dir, tmp_path, "zero", "--support-augment", "0")
    assert np.array_equal(plain, zero)
    code, copied, results = evaluate(trained, omniglot_dir, tmp_path, "copies", "--support-augment", "2")
    assert code == 0 and copied.shape == plain.shape and not np.array_equal(copied, plain)
    assert results["support_augment"] == {"copies": 2, "strength": 1.0, "kind": "affine"} and results["cpu_seconds"] > 0
    assert "15 adaptation images per task" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "copies.npy"), str(tmp_path / "plain.npy")]) == 0
    code, shifted, results = evaluate(trained, omniglot_dir, tmp_path, "shifted", "--support-augment", "2",
                                      "--support-augment-kind", "shift")
    assert code == 0 and not np.array_equal(shifted, copied) and results["support_augment"]["kind"] == "shift"
    assert "2 copies moved by whole pixels of each image" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [["--support-augment", "-1"], ["--support-augment-strength", "0.5"],
                                   ["--support-augment", "1", "--support-augment-strength", "0"],
                                   ["--support-augment-kind", "shift"],
                                   ["--support-augment", "1", "--support-augment-kind", "shift",
                                    "--support-augment-strength", "0.5"],
                                   ["--support-augment", "1", "--benchmark", "lake"]])
def test_bad_eval_flags_exit_2_with_one_line(trained, omniglot_dir, tmp_path, capsys, flags):
    assert evaluate(trained, omniglot_dir, tmp_path, "bad", *flags)[0] == 2
    assert "--support-augment" in capsys.readouterr().err


@pytest.mark.parametrize("name, words", [("omniglot-5w1s-snail", "fixed length"), ("sinusoid-maml", "sinusoid")])
def test_learners_that_cannot_take_more_shots_are_refused(tmp_path, omniglot_dir, capsys, name, words):
    """Refused from the checkpoint's config, before any network or data is built."""
    path = tmp_path / "model.pt"
    checkpoint.save(path, {"config": dataclasses.asdict(preset(name)), "meta": {"theta": {"w": torch.zeros(1)}}})
    assert main(["eval", str(path), "--data-dir", str(omniglot_dir), "--support-augment", "1", "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert words in err and "drop --support-augment" in err and len(err.strip().splitlines()) == 1
