"""`metalab eval A.pt B.pt ...` (evaluation/ensemble.py): each member scored as alone on the same episodes, the
ensemble against the mean of softmaxes computed here, its cost, and incompatible members refused in one line."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from metalab import checkpoint
from metalab.cli.main import build_parser, main
from metalab.config import preset
from metalab.data.episode import concat, fixed_episodes
from metalab.data.support_augment import SupportAugmentedTasks, SupportCopies
from metalab.errors import MetalabError
from metalab.evaluation import ensemble as ensemble_module
from metalab.evaluation.checkpoints import evaluate_checkpoint
from metalab.evaluation.ensemble import evaluate_ensemble
from metalab.methods.registry import make_method
from metalab.models.networks import reinitialize
from metalab.problem import build_problem, image_learner
from metalab.training.metrics_log import training_cost

TINY = dict(hidden=4, width=8, memory_slots=8, layers=1, eval_inner_steps=1, threads=1)


def save_model(path, name, seed=0, **changes):
    """A freshly initialized model of preset `name`, drawn from `seed`, saved as a meta-training checkpoint."""
    config = preset(name).replace(**{**TINY, **changes}, seed=seed)
    learner = (image_learner(config) if config.problem == "omniglot"
               else build_problem(config, parts=()).learner)
    reinitialize(learner.model, seed)
    meta = make_method(config, learner).init_meta()
    checkpoint.save(path, {"config": dataclasses.asdict(config), "step": 3,
                           "meta": {g: {n: p.detach() for n, p in ps.items()} for g, ps in meta.items()}})
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return {"maml": save_model(folder / "maml.pt", "omniglot-5w1s-maml", seed=1),
            "protonet": save_model(folder / "protonet.pt", "omniglot-5w1s-protonet", seed=2),
            "snail": save_model(folder / "snail.pt", "omniglot-5w1s-snail", seed=3),
            "maml20": save_model(folder / "maml20.pt", "omniglot-20w1s-maml", seed=4),
            "sinusoid": save_model(folder / "sinusoid.pt", "sinusoid-maml", seed=5, hidden=8),
            "sinusoid2": save_model(folder / "sinusoid2.pt", "sinusoid-maml", seed=6, hidden=8),
            "polynomial": save_model(folder / "polynomial.pt", "sinusoid-maml", seed=7, hidden=8, problem="polynomial"),
            "few": save_model(folder / "few.pt", "sinusoid-maml", seed=10, hidden=8, shots=5),
            "wide": save_model(folder / "wide.pt", "sinusoid-maml", seed=8, hidden=8, amplitude_max=9.0),
            "vinyals": save_model(folder / "vinyals.pt", "omniglot-5w1s-maml", seed=9, split="vinyals")}


def ensemble(paths, omniglot_dir, tmp_path, name="ensemble", **settings):
    """(results, the ensemble's saved scores [1, episodes]) of evaluate_ensemble on 6 val episodes."""
    settings = {"episodes": 6, "part": "val", "threads": 1, **settings}
    results = evaluate_ensemble([str(p) for p in paths], data_dir=omniglot_dir, save_scores=tmp_path / f"{name}.npy",
                                **settings)
    return results, np.load(tmp_path / f"{name}.npy")


def alone(path, omniglot_dir, tmp_path, name, **settings):
    """[rows, episodes] what `metalab eval` saves for the checkpoint alone on the same episodes."""
    settings = {"episodes": 6, "part": "val", "threads": 1, **settings}
    evaluate_checkpoint(str(path), data_dir=omniglot_dir, save_scores=tmp_path / f"{name}.npy", **settings)
    return np.load(tmp_path / f"{name}.npy")


def test_an_ensemble_of_one_is_that_checkpoint(models, omniglot_dir, tmp_path):
    results, scores = ensemble([models["maml"]], omniglot_dir, tmp_path)
    single = alone(models["maml"], omniglot_dir, tmp_path, "maml")
    assert scores.shape == (1, 6) and np.array_equal(scores[0], single[-1])
    assert results["members"][0]["mean"] == results["ensemble"]["mean"] == pytest.approx(single[-1].mean())
    assert results["ensemble"]["minus_best_member"]["mean"] == 0


def test_the_same_checkpoint_twice_is_itself(models, omniglot_dir, tmp_path):
    results, scores = ensemble([models["protonet"]] * 2, omniglot_dir, tmp_path)
    assert np.array_equal(scores[0], alone(models["protonet"], omniglot_dir, tmp_path, "protonet")[0])
    assert results["ensemble"]["minus_best_member"]["mean"] == 0


def test_two_members_are_the_mean_of_their_softmaxes(models, omniglot_dir, tmp_path, capsys):
    """Against the probabilities computed here from each member's own predictions, over two batches of episodes;
    each member keeps its own steps (maml 1, protonet none) and scores as it does alone."""
    paths = [models["maml"], models["protonet"]]
    results, scores = ensemble(paths, omniglot_dir, tmp_path, episodes=55)
    episodes = concat(list(fixed_episodes(build_problem(preset("omniglot-5w1s-maml").replace(queries=15),
                                                        omniglot_dir, parts=("val",)).tasks["val"], 0, 55)))
    probabilities = []
    for path in paths:
        config, meta = (lambda s: (preset("omniglot-5w1s-maml").replace(**s["config"]), s["meta"]))(
            checkpoint.load(path))
        method = make_method(config, image_learner(config))
        probabilities.append(torch.softmax(method.predictions(meta, episodes, config.eval_inner_steps).double(), -1))
    expected = ((probabilities[0] + probabilities[1]) / 2).argmax(-1).eq(episodes.query_y).float().mean(1).double()
    np.testing.assert_array_equal(scores[0], expected.numpy())
    for path, member in zip(paths, results["members"]):
        assert member["mean"] == pytest.approx(alone(path, omniglot_dir, tmp_path, "m", episodes=55)[-1].mean())
    assert [m["steps"] for m in results["members"]] == [1, 0]
    best = max(results["members"], key=lambda m: m["mean"])
    assert results["ensemble"]["minus_best_member"]["member"] == best["checkpoint"]
    assert results["ensemble"]["minus_best_member"]["mean"] == pytest.approx(scores[0].mean() - best["mean"])
    out = capsys.readouterr().out
    assert "ensemble of 2 checkpoints" in out and "mean of the members' class probabilities" in out


def test_regression_members_average_their_predictions(models, tmp_path):
    paths = [models["sinusoid"], models["sinusoid2"]]
    results, scores = ensemble(paths, None, tmp_path, queries=20)
    config = preset("sinusoid-maml").replace(**{**TINY, "hidden": 8, "queries": 20})
    episodes = concat(list(fixed_episodes(build_problem(config, parts=("val",)).tasks["val"], 0, 6)))
    method = make_method(config, build_problem(config, parts=()).learner)
    mean = sum(method.predictions(checkpoint.load(p)["meta"], episodes, 1) for p in paths) / 2
    np.testing.assert_allclose(scores[0], ((mean - episodes.query_y) ** 2).mean((1, 2)).numpy(), rtol=1e-6)
    assert results["metric"] == "MSE" and "median" in results["ensemble"]


def test_the_cost_is_each_members_evaluation_and_the_training_its_run_logged(models, omniglot_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    logged = save_model(run / "best.pt", "omniglot-5w1s-maml", seed=8)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"step": 1, "time": 2.0, "cpu_time": 1.5}, {"step": 2, "time": 4.0, "cpu_time": 3.0},
        {"step": 5, "time": 9.0, "cpu_time": 7.0})))
    results, _ = ensemble([logged, models["protonet"]], omniglot_dir, tmp_path, training_cost=training_cost)
    cost = results["cost"]
    seconds = cost["evaluation_cpu_seconds"]
    assert [m["cpu_seconds"] for m in results["members"]] == seconds["members"] and min(seconds["members"]) > 0
    assert seconds["total"] == pytest.approx(sum(seconds["members"]) + seconds["averaging"])
    assert cost["training"][0] == {"log": str(run / "metrics.jsonl"), "step": 2, "cpu_seconds": 3.0,
                                   "wall_seconds": 4.0, "run_steps": 5, "run_cpu_seconds": 7.0}  # checkpoint: step 3
    assert cost["training"][1] == "not recorded" and cost["training_cpu_seconds_total"] == "not recorded"


def test_support_augment_copies_for_members_that_take_shots_and_the_same_queries(models, omniglot_dir, tmp_path,
                                                                                   capsys):
    """protonet reads the support set with copies, SNAIL (fixed_support) the plain one; each scores as alone with
    and without --support-augment, which holds only if both read the queries of the same episodes."""
    results, _ = ensemble([models["protonet"], models["snail"]], omniglot_dir, tmp_path, support=SupportCopies(1))
    assert [m["reads_support_copies"] for m in results["members"]] == [True, False]
    with_copies = alone(models["protonet"], omniglot_dir, tmp_path, "p", support=SupportCopies(1))
    assert with_copies[0].mean() != alone(models["protonet"], omniglot_dir, tmp_path, "plain")[0].mean()  # copies show
    assert results["members"][0]["mean"] == pytest.approx(with_copies[0].mean())
    assert results["members"][1]["mean"] == pytest.approx(alone(models["snail"], omniglot_dir, tmp_path, "s")[0].mean())
    out = capsys.readouterr().out
    assert "protonet (no steps, reads copies)" in out and "snail (no steps)" in out


def test_members_given_other_queries_stop_the_evaluation(models, omniglot_dir, tmp_path, monkeypatch):
    """The check that makes the ensemble's pairing hold: augmentation that drew before the task would move it."""
    class DrawsFirst(SupportAugmentedTasks):
        def sample(self, generator, batch_size):
            torch.rand(1, generator=generator)
            return super().sample(generator, batch_size)

    monkeypatch.setattr(ensemble_module, "SupportAugmentedTasks", DrawsFirst)
    with pytest.raises(RuntimeError, match="other queries"):
        ensemble([models["snail"], models["protonet"]], omniglot_dir, tmp_path, support=SupportCopies(1))


def test_support_augmentation_keeps_the_plain_episodes_queries(omniglot_dir):
    tasks = build_problem(preset("omniglot-5w1s-maml").replace(queries=15), omniglot_dir, parts=("test",)).tasks["test"]
    plain = concat(list(fixed_episodes(tasks, 3, 8)))
    grown = concat(list(fixed_episodes(SupportAugmentedTasks(tasks, SupportCopies(2, 1.5)), 3, 8)))
    assert torch.equal(grown.query_x, plain.query_x) and torch.equal(grown.query_y, plain.query_y)
    assert torch.equal(grown.support_x[:, :5], plain.support_x)


@pytest.mark.parametrize("members, flags, words", [
    (["maml", "sinusoid"], [], "sinusoid.pt models sinusoid tasks and"),
    (["sinusoid", "polynomial"], [], "polynomial.pt models polynomial tasks"),
    (["maml", "maml20"], [], "maml20.pt was trained 20-way 1-shot and"),
    (["maml", "vinyals"], [], "vinyals.pt was trained on the vinyals split"),
    (["sinusoid", "wide"], [], "wide.pt was trained on other sinusoid tasks"),
    (["sinusoid", "few"], [], "few.pt was trained 5-shot and"),
    (["maml20", "protonet", "maml"], ["--ways", "20"], "maml.pt: this checkpoint's network (maml) was trained 5-way"),
    (["maml", "protonet"], ["--ways", "3"], "maml.pt: this checkpoint's network (maml) was trained 5-way"),
    (["maml", "protonet"], ["--curvature"], "--curvature evaluates one checkpoint"),
    (["maml", "protonet"], ["--benchmark", "lake"], "--benchmark evaluates one checkpoint"),
    (["snail", "snail"], ["--support-augment", "1"], "drop --support-augment"),
    (["sinusoid", "sinusoid2"], ["--support-augment", "1"], "drop --support-augment"),
])
def test_incompatible_members_exit_2_with_one_line_and_write_nothing(models, omniglot_dir, tmp_path, capsys, members,
                                                                     flags, words):
    scores, report = tmp_path / "out" / "e.npy", tmp_path / "out" / "e.json"
    argv = ["eval", *(str(models[m]) for m in members), "--data-dir", str(omniglot_dir), "--episodes", "2",
            "--threads", "1", "--save-scores", str(scores), "--json", str(report), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err
    assert not scores.exists() and not report.exists()


def test_the_command_writes_the_ensembles_scores_for_compare(models, omniglot_dir, tmp_path, capsys):
    argv = ["eval", str(models["maml"]), str(models["protonet"]), "--data-dir", str(omniglot_dir), "--part", "val",
            "--episodes", "4", "--threads", "1", "--save-scores", str(tmp_path / "e.npy"), "--json",
            str(tmp_path / "e.json")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "e.json").read_text())
    assert [m["method"] for m in results["members"]] == ["maml", "protonet"] and "ensemble" in results
    assert main(["eval", str(models["maml"]), "--data-dir", str(omniglot_dir), "--part", "val", "--episodes", "4",
                 "--threads", "1", "--save-scores", str(tmp_path / "m.npy")]) == 0
    assert main(["compare", str(tmp_path / "e.npy"), str(tmp_path / "m.npy")]) == 0
    assert "paired over 4 episodes" in capsys.readouterr().out


def test_a_method_without_predictions_is_refused_in_one_line(models, omniglot_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(ensemble_module, "method_for", lambda *args, **kwargs: object())
    with pytest.raises(MetalabError, match="maml.pt: its method maml has no `predictions`"):
        ensemble([models["maml"], models["maml"]], omniglot_dir, tmp_path)


def test_an_ensemble_under_torchrun_is_refused(models, monkeypatch):
    """Refused before any process group is joined (main would leave a failed rank at once, so the call is direct)."""
    from metalab.cli import evaluate as evaluate_command

    monkeypatch.setenv("WORLD_SIZE", "2")
    args = build_parser().parse_args(["eval", str(models["maml"]), str(models["protonet"])])
    with pytest.raises(MetalabError, match="without torchrun"):
        evaluate_command.run_ensemble(args)
