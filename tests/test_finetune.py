"""The fine-tuning baseline against independent references: nearest class mean, hand-computed SGD steps,
torch.optim.Adam, MAML's own adaptation, the per-task loop; pre-training and its early stopping; the commands."""

import csv
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from metalab import checkpoint
from metalab.cli.main import build_parser, main
from metalab.config import Config, FinetuneConfig, PretrainConfig
from metalab.data.classification import ClassificationTasks
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.evaluation.evaluate import per_episode_scores
from metalab.evaluation.grid_search import grid_search
from metalab.methods.finetune import FineTuning, finetune_steps
from metalab.methods.heads import layers_of
from metalab.methods.learner import Learner, classification, cross_entropy, mse
from metalab.methods.optimization import InnerLoop, adapt_steps
from metalab.models.networks import conv4, mlp
from metalab.problem import Problem
from metalab.training import pretrain
from metalab.training.pretrain import (
    pretrain_classifier,
    pretrain_regressor,
)

WAYS, SHOTS, QUERIES, SIZE, TASKS = 3, 2, 4, 8, 3


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny_conv(ways=WAYS, seed=0):
    torch.manual_seed(seed)
    return conv4(ways, hidden=4, pooling=False, image_size=SIZE).double()


def tiny_episode(seed=0, tasks=TASKS):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS)
    return Episode(torch.rand(tasks, WAYS * SHOTS, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
                   labels.repeat_interleave(SHOTS).expand(tasks, -1).clone(),
                   torch.rand(tasks, WAYS * QUERIES, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
                   labels.repeat_interleave(QUERIES).expand(tasks, -1).clone())


def params_of(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def all_steps(learner, start, episode, config, batching="vmap"):
    return [{n: p.clone() for n, p in params.items()}
            for params in finetune_steps(learner, start, episode.support_x, episode.support_y, config, batching)]


def finetune_scores(learner, start, episodes, config, rows, batching="vmap"):
    """[len(rows), episodes]: scores after each number of steps in rows, by the FineTuning method's own path."""
    method = FineTuning(learner, config, batching, scored=tuple(rows))
    return per_episode_scores({"theta": start}, method, episodes, config.steps)[rows]


def test_class_means_head_at_zero_steps_is_the_nearest_class_mean_classifier():
    model, episode = tiny_conv(), tiny_episode()
    learner = classification(model)
    body = model[:-1]
    for normalized in (False, True):
        config = FinetuneConfig(head_init="normalized_class_means" if normalized else "class_means", steps=0)
        (params,) = all_steps(learner, params_of(model), episode, config)
        logits = vmap(learner.predict)(params, episode.query_x)
        for t in range(TASKS):
            with torch.no_grad():  # the module's own forward: batch statistics of each set, as in fine-tuning
                support, query = body(episode.support_x[t]), body(episode.query_x[t])
            means = torch.stack([support[episode.support_y[t] == k].mean(0) for k in range(WAYS)])
            if normalized:
                nearest = F.cosine_similarity(query.unsqueeze(1), means.unsqueeze(0), dim=2).argmax(1)
            else:
                distances = torch.cdist(query, means) ** 2
                nearest = distances.argmin(1)
                # logits = |z|^2 - |z - c_k|^2 exactly
                torch.testing.assert_close(logits[t], (query * query).sum(1, keepdim=True) - distances)
            assert torch.equal(logits[t].argmax(1), nearest)
        accuracy = finetune_scores(learner, params_of(model), [episode], config, [0])
        expected = (logits.argmax(2) == episode.query_y).double().mean(1).numpy()
        np.testing.assert_allclose(accuracy[0], expected)


def test_frozen_blocks_stay_bit_identical_and_gradual_unfreezing_goes_top_down():
    model, episode = tiny_conv(), tiny_episode(seed=1)
    learner, start = Learner(model, cross_entropy), params_of(model)
    layers = layers_of(model)
    assert len(layers.body) == 4 and layers.head == ("13.weight", "13.bias")
    config = FinetuneConfig(head_init="zero", steps=4, optimizer="adam", head_lr=0.1, body_lr=0.05,
                            freeze_blocks=2, weight_decay=0.1)
    final = all_steps(learner, start, episode, config)[-1]
    for index, block in enumerate(layers.body):
        for name in block:
            unchanged = torch.equal(final[name], start[name].expand_as(final[name]))
            assert unchanged == (index < 2), (name, index)
    # Gradual: the head alone for 2 steps, then one more block every 2 steps from the top (indices 3, 2, 1);
    # the lowest (index 0) stays frozen.
    config = config.replace(freeze_blocks=1, unfreeze_every=2, steps=7)
    trajectory = all_steps(learner, start, episode, config)
    steps = list(zip(trajectory, trajectory[1:]))
    changed_blocks = [{i for i, block in enumerate(layers.body)
                       if any(not torch.equal(after[n], before[n]) for n in block)} for before, after in steps]
    assert changed_blocks == [set(), set(), {3}, {3}, {2, 3}, {2, 3}, {1, 2, 3}]
    assert all(not torch.equal(after["13.weight"], before["13.weight"]) for before, after in steps)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_one_sgd_step_with_layer_decay_matches_a_hand_computation(weight_decay):
    # y = w3 * relu(w2 * relu(w1 * x + b1) + b2) + b3, one point (x, y) = (1, 0), all pre-activations positive.
    model = mlp(1, hidden=1, layers=2).double()
    w1, b1, w2, b2, w3, b3 = 0.5, 0.1, 2.0, 0.3, 1.5, -0.2
    start = {"0.weight": [[w1]], "0.bias": [b1], "2.weight": [[w2]], "2.bias": [b2], "4.weight": [[w3]], "4.bias": [b3]}
    start = {name: torch.tensor(value, dtype=torch.float64) for name, value in start.items()}
    x = torch.ones(1, 1, 1, dtype=torch.float64)
    h1 = w1 * 1 + b1  # 0.6
    h2 = w2 * h1 + b2  # 1.5
    r = 2 * (w3 * h2 + b3 - 0)  # dMSE/dy_hat = 2 * (2.05 - 0) = 4.1
    gradient = {"4.weight": r * h2, "4.bias": r, "2.weight": r * w3 * h1, "2.bias": r * w3,
                "0.weight": r * w3 * w2 * 1, "0.bias": r * w3 * w2}
    head_lr, body_lr, decay = 0.1, 0.01, 0.5
    rate = {"4.weight": head_lr, "4.bias": head_lr, "2.weight": body_lr, "2.bias": body_lr,  # top block: depth 0
            "0.weight": body_lr * decay, "0.bias": body_lr * decay}  # one block below: depth 1
    config = FinetuneConfig(head_init="keep", steps=1, optimizer="sgd", head_lr=head_lr, body_lr=body_lr,
                            layer_decay=decay, weight_decay=weight_decay)
    after = all_steps(Learner(model, mse), start, Episode(x, x * 0, x, x * 0), config)[-1]
    for name, value in start.items():
        expected = value.item() - rate[name] * (gradient[name] + weight_decay * value.item())
        assert after[name].item() == pytest.approx(expected, rel=1e-12), name


def test_functional_adam_equals_torch_adam():
    torch.manual_seed(0)
    model = mlp(1, 8).double()
    x = torch.linspace(-2, 2, 6, dtype=torch.float64).view(1, 6, 1)
    episode = Episode(x, torch.sin(x), x, torch.sin(x))
    config = FinetuneConfig(head_init="keep", steps=4, optimizer="adam", head_lr=0.05, body_lr=0.05,
                            weight_decay=0.01)
    got = all_steps(Learner(model, mse), params_of(model), episode, config)[-1]
    reference = mlp(1, 8).double()
    reference.load_state_dict(model.state_dict())
    optimizer = torch.optim.Adam(reference.parameters(), lr=0.05, weight_decay=0.01)
    for _ in range(4):
        optimizer.zero_grad()
        F.mse_loss(reference(x[0]), torch.sin(x[0])).backward()
        optimizer.step()
    for name, p in reference.named_parameters():
        torch.testing.assert_close(got[name][0], p.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_vmap_over_tasks_equals_the_per_task_loop(optimizer):
    model, episode = tiny_conv(seed=2), tiny_episode(seed=2)
    learner, start = classification(model), params_of(model)
    config = FinetuneConfig(head_init="class_means", steps=3, optimizer=optimizer, head_lr=0.1, body_lr=0.05,
                            layer_decay=0.5, unfreeze_every=1, weight_decay=0.01)
    runs = {b: all_steps(learner, start, episode, config, b) for b in ("vmap", "loop")}
    for by_vmap, by_loop in zip(runs["vmap"], runs["loop"], strict=True):
        for name in by_loop:
            torch.testing.assert_close(by_vmap[name], by_loop[name], rtol=1e-9, atol=1e-12)
    scores = {b: finetune_scores(learner, start, [episode], config, [0, 3], b) for b in ("vmap", "loop")}
    np.testing.assert_allclose(scores["vmap"], scores["loop"])


def test_sgd_from_a_maml_theta_keeping_its_head_is_maml_adaptation():
    model, episode = tiny_conv(seed=3), tiny_episode(seed=3)
    learner, theta = Learner(model, cross_entropy), params_of(model)
    config = FinetuneConfig(head_init="keep", steps=2, optimizer="sgd", head_lr=0.3, body_lr=0.3)
    got = all_steps(learner, theta, episode, config)
    for t in range(TASKS):
        expected = list(adapt_steps({"theta": theta}, episode.support_x[t], episode.support_y[t], learner,
                                    InnerLoop("maml", 0.3), 2))
        for ours, maml in zip(got, expected, strict=True):
            for name in theta:
                torch.testing.assert_close(ours[name][t], maml[name], rtol=1e-9, atol=1e-12)


def test_scores_do_not_depend_on_how_episodes_are_batched():
    model, episode = tiny_conv(seed=4), tiny_episode(seed=4, tasks=4)
    learner = classification(model)
    config = FinetuneConfig(head_init="normalized_class_means", steps=2, head_lr=0.1, body_lr=0.01)
    whole = finetune_scores(learner, params_of(model), [episode], config, [0, 1, 2])
    halves = finetune_scores(learner, params_of(model), [episode.tasks(0, 2), episode.tasks(2, 4)], config,
                             [0, 1, 2])
    assert whole.shape == (3, 4)
    np.testing.assert_allclose(whole, halves, rtol=1e-12)


# ---- grid search and the finetune command ----------------------------------------------------------------

class RecordedTasks:
    """A task distribution that logs which part was sampled, in order."""

    def __init__(self, part, tasks, log):
        self.part, self.tasks, self.log = part, tasks, log

    def sample(self, generator, batch_size):
        self.log.append(self.part)
        return self.tasks.sample(generator, batch_size)


def synthetic_tasks(seed, ways, shots, queries, classes=8, drawers=20):
    """Classification tasks over random 8x8 class templates with noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, 1, SIZE, SIZE, generator=g)
    images = (templates + 0.3 * torch.rand(classes, drawers, SIZE, SIZE, generator=g)).clamp(0, 1)
    bank = (images.reshape(-1, SIZE, SIZE) * 255).to(torch.uint8)
    return ClassificationTasks(bank, torch.arange(classes * drawers).view(classes, drawers), ways, shots, queries)


@pytest.fixture
def fake_problem(monkeypatch):
    """`metalab finetune` on synthetic 8x8 tasks and a 4-channel Conv4, logging every part it samples."""
    log = []

    def build(config, data_dir=None, parts=("train", "val", "test")):
        model = conv4(config.ways, hidden=config.hidden, pooling=config.pooling, image_size=SIZE)
        tasks = {part: RecordedTasks(part, synthetic_tasks(i, config.ways, config.shots, config.queries), log)
                 for i, part in enumerate(parts)}
        return Problem(classification(model), tasks)

    # Modules that bind `build_problem` by name at import must be imported before the patch, or they would
    # keep the fake for the rest of the session.
    import metalab.evaluation.checkpoints  # noqa: F401
    import metalab.training.loop  # noqa: F401

    monkeypatch.setattr("metalab.problem.build_problem", build)
    return log


def test_grid_search_sees_only_validation_episodes_then_the_test_is_scored(tmp_path, fake_problem, capsys):
    table, scores = tmp_path / "grid.csv", tmp_path / "scores.npy"
    code = main(["finetune", "--init", "random", "--hidden", "4", "--ways", "3", "--episodes", "6", "--threads", "1",
                 "--grid", "--grid-set", "head_init=zero,class_means", "--grid-set", "body_lr=0",
                 "--grid-set", "head_lr=0.1", "--grid-set", "steps=0,2", "--grid-episodes", "4",
                 "--grid-out", str(table), "--save-scores", str(scores)])
    assert code == 0
    log = fake_problem
    assert log == ["val"] * (2 * 4) + ["test"] * 6  # 2 combinations x 4 val episodes, then the test episodes
    rows = list(csv.DictReader(table.open()))
    assert [(r["head_init"], r["steps"]) for r in rows] == [("zero", "0"), ("zero", "2"), ("class_means", "0"),
                                                            ("class_means", "2")]
    best = max(rows, key=lambda r: float(r["mean"]))
    printed = capsys.readouterr().out
    assert f"head_init={best['head_init']}" in printed and "3-way 1-shot 15-query, 6 test episodes" in printed
    assert np.load(scores).shape == (1, 6)
    assert main(["compare", str(scores), str(scores)]) == 0
    assert "A - B (paired over 6 episodes): 0 ± 0" in capsys.readouterr().out


def test_grid_search_returns_the_best_row():
    model = tiny_conv(seed=5)
    tasks = synthetic_tasks(5, WAYS, 1, 3)
    best, rows = grid_search(classification(model.float()), params_of(model.float()), tasks,
                             FinetuneConfig(body_lr=0.0), {"head_lr": [0.0, 0.5], "head_init": ["zero"],
                                                           "steps": [0, 3]}, episodes=5, seed=1)
    top = max(rows, key=lambda row: row["mean"])
    assert (best.head_lr, best.steps, best.head_init) == (top["head_lr"], top["steps"], "zero")
    assert len(rows) == 4 and rows[0]["mean"] == pytest.approx(1 / WAYS)  # a zero head at 0 steps: all tied


def test_maml_checkpoint_as_start_and_its_head_limit(tmp_path, fake_problem, capsys):
    config = Config(hidden=4, pooling=False, ways=5)
    model = conv4(5, hidden=4, pooling=False, image_size=SIZE)
    checkpoint.save(tmp_path / "maml.pt", {"config": dataclasses.asdict(config), "meta": {"theta": params_of(model)}})
    common = ["finetune", "--init", f"maml:{tmp_path / 'maml.pt'}", "--episodes", "2", "--threads", "1",
              "--head-init", "keep", "--steps", "1"]
    assert main(common + ["--ways", "3"]) == 0  # fewer ways: the head's first rows
    assert "after  1 fine-tuning steps: accuracy" in capsys.readouterr().out
    assert main(common + ["--ways", "7"]) == 2
    assert "which has 5 outputs, but the tasks are 7-way; use --ways 5 or fewer" in capsys.readouterr().err
    assert main(["finetune", "--init", f"pretrained:{tmp_path / 'maml.pt'}"]) == 2
    assert f"use --init maml:{tmp_path / 'maml.pt'}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--init", "pretrained"], "--init must be pretrained:PATH, maml:PATH or random"),
    (["--init", "random", "--hidden", "4", "--optimizer", "rmsprop"], "--optimizer must be one of ('sgd', 'adam')"),
    (["--init", "random", "--hidden", "4", "--head-lr", "-1"], "--head-lr must be a finite number >= 0"),
    (["--init", "random", "--hidden", "4", "--freeze-blocks", "5", "--episodes", "1"],
     "exceeds the network's 4 body blocks"),
    (["--init", "random", "--hidden", "4", "--episodes", "0"], "--episodes must be a positive finite number, got 0"),
    (["--init", "random", "--hidden", "4", "--grid", "--grid-set", "nope=1"], "--grid-set takes FIELD=V1,V2"),
    (["--init", "random", "--problem", "images"], "--problem must be one of"),
    (["--init", "maml:/nonexistent/best.pt"], "no checkpoint at /nonexistent/best.pt"),
    (["--init", "maml:x.pt", "--hidden", "8"], "leave out --hidden (for --init random only)"),
    (["--init", "random", "--hidden", "4", "--device", "gpu"], "--device must be cpu, cuda or cuda:N"),
    pytest.param(["--init", "random", "--hidden", "4", "--device", "cuda"], "no CUDA device; use --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
])
def test_bad_finetune_inputs_are_clear_errors(argv, message, fake_problem, capsys):
    assert main(["finetune", "--threads", "1"] + argv) == 2
    assert message in capsys.readouterr().err


def test_class_means_on_regression_and_a_non_sequential_network_are_refused():
    x = torch.zeros(1, 2, 1)
    with pytest.raises(MetalabError, match="needs class labels"):
        next(finetune_steps(Learner(mlp(1, 4), mse), params_of(mlp(1, 4)), x, x, FinetuneConfig()))
    with pytest.raises(MetalabError, match="nn.Sequential network ending in its nn.Linear"):
        layers_of(torch.nn.Linear(2, 2))


def test_cli_flags_cover_the_config_fields():
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command, settings in (("finetune", FinetuneConfig), ("pretrain", PretrainConfig)):
        flags = {option for action in commands[command]._actions for option in action.option_strings}
        assert {"--" + f.name.replace("_", "-") for f in dataclasses.fields(settings)} <= flags, command


# ---- pre-training --------------------------------------------------------------------------------------------

def synthetic_bank(classes=6, drawers=10):
    tasks = synthetic_tasks(0, 2, 1, 1, classes, drawers)
    return tasks.bank, tasks.class_images


def test_pretraining_runs_end_to_end_and_learns(tmp_path):
    bank, table = synthetic_bank()
    config = PretrainConfig(hidden=4, val_drawers=2, batch_size=16, max_epochs=4, patience=4, lr=0.01, seed=0)
    state = pretrain_classifier(config, bank, table, tmp_path / "pretrained.pt")
    saved = checkpoint.load(tmp_path / "pretrained.pt")
    assert saved["kind"] == pretrain.KIND and saved["head"] is None and saved["metric"] == "accuracy"
    assert set(saved["body"]) == {name for name, _ in conv4(6, hidden=4, pooling=False, image_size=SIZE)[:-1]
                                  .named_parameters()}
    assert saved["val"] == max(h["val"] for h in saved["history"]) == state["val"] > 1 / 6 + 0.2


def test_early_stopping_stops_when_validation_stops_improving_and_keeps_the_best(tmp_path, monkeypatch):
    bank, table = synthetic_bank()
    scripted, seen = iter([0.2, 0.5, 0.4, 0.45, 0.9]), []

    def scripted_score(model, batches, metric):
        seen.append({name: p.detach().clone() for name, p in model.named_parameters()})
        return next(scripted)

    monkeypatch.setattr(pretrain, "validation_score", scripted_score)
    config = PretrainConfig(hidden=4, val_drawers=2, batch_size=16, max_epochs=10, patience=2)
    pretrain_classifier(config, bank, table, tmp_path / "pretrained.pt")
    saved = checkpoint.load(tmp_path / "pretrained.pt")
    assert len(seen) == 4 and [h["val"] for h in saved["history"]] == [0.2, 0.5, 0.4, 0.45]
    assert (saved["epoch"], saved["val"]) == (2, 0.5)
    for name, value in saved["body"].items():
        assert torch.equal(value, seen[1][name])


@pytest.mark.parametrize("device, message", [
    ("gpu", "--device must be cpu, cuda or cuda:N, got 'gpu'"),
    pytest.param("cuda", "no CUDA device; use --device cpu",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")),
])
def test_pretraining_on_an_unusable_device_is_a_clear_error(tmp_path, device, message, capsys):
    assert main(["pretrain", "--problem", "sinusoid", "--out", str(tmp_path), "--device", device]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "pretrained.pt").exists()


def test_too_many_held_out_drawers_is_a_clear_error(tmp_path):
    bank, table = synthetic_bank(drawers=4)
    with pytest.raises(MetalabError, match="--val-drawers 4 leaves no training drawings"):
        pretrain_classifier(PretrainConfig(val_drawers=4), bank, table, tmp_path / "p.pt")


def test_sinusoid_pretraining_then_finetuning_through_the_commands(tmp_path, capsys):
    config = PretrainConfig(problem="sinusoid", hidden=8, batch_size=4, steps_per_epoch=5, val_episodes=3,
                            max_epochs=2, threads=1)
    state = pretrain_regressor(config, tmp_path / "pretrained.pt")
    assert state["metric"] == "MSE" and set(state["head"]) == {"4.weight", "4.bias"}
    scores = tmp_path / "s.npy"
    code = main(["finetune", "--init", f"pretrained:{tmp_path / 'pretrained.pt'}", "--episodes", "3", "--steps", "2",
                 "--optimizer", "sgd", "--every-step", "--threads", "1", "--save-scores", str(scores)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "10-shot sinusoid, 3 test episodes" in printed and "after  2 fine-tuning steps: MSE" in printed
    assert np.load(scores).shape == (3, 3)


def test_pretrain_and_finetune_commands_on_omniglot(tmp_path, omniglot_dir, capsys):
    out = tmp_path / "pre"
    code = main(["pretrain", "--data-dir", str(omniglot_dir), "--out", str(out), "--hidden", "4", "--max-epochs", "1",
                 "--rotations", "false", "--batch-size", "256", "--threads", "1"])
    assert code == 0
    saved = checkpoint.load(out / "pretrained.pt")
    assert saved["config"]["split"] == "minimal" and saved["val"] > 1 / 116
    code = main(["finetune", "--init", f"pretrained:{out / 'pretrained.pt'}", "--data-dir", str(omniglot_dir),
                 "--episodes", "4", "--steps", "1", "--threads", "1"])
    assert code == 0
    assert "5-way 1-shot 15-query, 4 test episodes (seed 0)" in capsys.readouterr().out
