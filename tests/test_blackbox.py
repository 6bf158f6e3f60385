"""Black-box learners: no label leakage, order invariance, they can memorize, and labels are permuted."""

import pytest
import torch

from metalab.config import preset
from metalab.data.episode import Episode, generator_for
from metalab.methods import blackbox
from metalab.methods.learner import ACCURACY, Learner, cross_entropy, mse
from metalab.methods.registry import make_method
from metalab.models.learners import BLACK_BOX_LEARNERS, blackbox_model

WAYS, SHOTS, QUERIES, TASKS, SIZE = 3, 2, 4, 2, 8


def classifier(method, embedding="conv4", seed=0):
    torch.manual_seed(seed)
    model = blackbox_model(method, (1, SIZE, SIZE), WAYS, WAYS, True, embedding=embedding, hidden=4, width=16,
                           memory_slots=8, sequence_length=WAYS * SHOTS + 1).double()
    return Learner(model, cross_entropy, ACCURACY)


def regressor(method, seed=0):
    torch.manual_seed(seed)
    model = blackbox_model(method, (1,), 1, 1, False, embedding="mlp", hidden=40, width=16, sequence_length=6)
    return Learner(model.double(), mse)


def image_episode(seed=0, tasks=TASKS):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS).repeat_interleave(SHOTS)
    return Episode(torch.rand(tasks, WAYS * SHOTS, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
                   labels[torch.randperm(WAYS * SHOTS, generator=g)].expand(tasks, -1).clone(),
                   torch.rand(tasks, WAYS * QUERIES, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
                   torch.randint(0, WAYS, (tasks, WAYS * QUERIES), generator=g))


def regression_episode(seed=0, tasks=TASKS):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(tasks, 10, 1, generator=g, dtype=torch.float64) * 10 - 5
    y = torch.sin(x) * torch.rand(tasks, 1, 1, generator=g, dtype=torch.float64) * 5
    return Episode(x[:, :5], y[:, :5], x[:, 5:], y[:, 5:])


def predictions(learner, episode):
    meta = {"theta": dict(learner.model.named_parameters())}
    phi = blackbox.adapt(meta, episode.support_x, episode.support_y, learner)
    return blackbox.predict(meta, phi, episode.query_x, learner)


CASES = [(m, "classification") for m in BLACK_BOX_LEARNERS] + [(m, "regression") for m in BLACK_BOX_LEARNERS]


def make(method, kind, seed=0, embedding="conv4"):
    if kind == "classification":
        return classifier(method, embedding), image_episode(seed)
    return regressor(method), regression_episode(seed)


@pytest.mark.parametrize("method,kind", CASES)
def test_a_query_prediction_depends_on_the_support_set_and_that_query_only(method, kind):
    learner, episode = make(method, kind)
    query_x = episode.query_x.clone().requires_grad_(True)
    support_x = episode.support_x.clone().requires_grad_(True)
    out = predictions(learner, episode._replace(query_x=query_x, support_x=support_x))
    assert out.shape[:2] == episode.query_y.shape[:2]
    # d prediction(task 0, query 0) / d inputs: nonzero for the support set and query 0 itself, zero for every
    # other query and every other task (no query sees another query or another task's data).
    grad_query, grad_support = torch.autograd.grad(out[0, 0].sum(), (query_x, support_x))
    assert grad_query[0, 0].abs().sum() > 0 and grad_support[0].abs().sum() > 0
    assert grad_query[0, 1:].abs().sum() == 0 and grad_query[1:].abs().sum() == 0
    assert grad_support[1:].abs().sum() == 0


@pytest.mark.parametrize("method,kind", CASES)
def test_query_labels_never_change_a_prediction(method, kind):
    learner, episode = make(method, kind)
    relabelled = episode._replace(query_y=(episode.query_y + 1) % WAYS if kind == "classification"
                                  else episode.query_y + 100.0)
    assert torch.equal(predictions(learner, episode), predictions(learner, relabelled))
    # while the support labels do change them: the learner reads them
    resupported = episode._replace(support_y=(episode.support_y + 1) % WAYS if kind == "classification"
                                   else episode.support_y + 1.0)
    assert not torch.allclose(predictions(learner, episode), predictions(learner, resupported))


# Which learners ignore the order of the support set: the set learners by construction; the sequence learners
# read it in order (SNAIL as a sequence, Meta Networks through the LSTM that reads the support gradients).
ORDER_INVARIANT = {"average": True, "attention": True, "lstm": False, "mann": False, "snail": False, "metanet": False}


@pytest.mark.parametrize("method,kind", CASES)
def test_order_of_the_support_set(method, kind):
    learner, episode = make(method, kind)
    order = torch.randperm(episode.support_x.shape[1], generator=torch.Generator().manual_seed(1))
    shuffled = episode._replace(support_x=episode.support_x[:, order], support_y=episode.support_y[:, order])
    same = torch.allclose(predictions(learner, episode), predictions(learner, shuffled), rtol=1e-10, atol=1e-10)
    assert same == ORDER_INVARIANT[method]


class _ScaleAndShift(torch.nn.Module):
    def __init__(self, scale, shift):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, features):
        return features * self.scale + self.shift


@pytest.mark.parametrize("embedding, invariant", [("conv4", True), ("pixels", False)])
def test_the_conv4_lstm_reads_features_standardized_by_the_support_set(embedding, invariant):
    """An embedding drifting toward one image-independent vector changes nothing the Conv4 LSTM reads: its
    predictions do not change under any positive per-feature scale and shift of the embedding's output. The
    raw-pixel LSTM (the homework's) reads its inputs as they are."""
    learner, episode = classifier("lstm", embedding), image_episode()
    before = predictions(learner, episode)
    features = learner.model.lstm.input_size - WAYS
    g = torch.Generator().manual_seed(1)
    scale = torch.rand(features, generator=g, dtype=torch.float64) * 1.5 + 0.5
    shift = torch.randn(features, generator=g, dtype=torch.float64) * 3
    learner.model.embed = torch.nn.Sequential(learner.model.embed, _ScaleAndShift(scale, shift))
    after = predictions(learner, episode)
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-4) == invariant


@pytest.mark.parametrize("method,kind", CASES)
def test_a_learner_memorizes_a_fixed_set_of_tasks(method, kind):
    """Trained on the same 2 tasks, the query loss goes to near zero: the network can fit what it reads."""
    learner, episode = make(method, kind, seed=3, embedding="pixels")
    if kind == "regression":
        episode = episode._replace(support_y=episode.support_y / 5, query_y=episode.query_y / 5)
    learner = Learner(learner.model.float(), learner.loss, learner.metric)
    episode = Episode(*(t.float() if t.is_floating_point() else t for t in episode))
    method_ = blackbox.BlackBoxMethod(learner)
    meta = method_.init_meta()
    # SNAIL's blocks (over 1,000 units wide, no normalization) fit this tiny task reliably at a smaller step
    optimizer = torch.optim.Adam(list(meta["theta"].values()), lr=3e-3 if method == "snail" else 1e-2)
    first = None
    for step in range(150):
        optimizer.zero_grad()
        loss, _ = method_.meta_loss(meta, episode, step)
        loss.backward()
        loss = loss.item()
        first = first if first is not None else loss
        optimizer.step()
    assert loss < 0.02 * first, (first, loss)


def test_batched_loss_is_the_mean_of_per_task_losses():
    learner, episode = make("attention", "classification")
    meta = {"theta": dict(learner.model.named_parameters())}
    losses, scores = blackbox.batch_loss(meta, tuple(episode), learner)
    for t in range(TASKS):
        alone, _ = blackbox.batch_loss(meta, tuple(episode.task(t)), learner)
        torch.testing.assert_close(losses[t : t + 1], alone)
    assert scores.shape == (TASKS,) and ((scores >= 0) & (scores <= 1)).all()


def test_labels_are_permuted_per_episode_so_ignoring_the_support_set_scores_chance(omniglot_problem):
    """A classifier of the query image alone, trained on meta-train episodes, could exploit a fixed
    class-to-label mapping; with labels permuted per episode it stays at chance, even on training classes."""
    tasks = omniglot_problem.tasks["train"]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 64), torch.nn.ReLU(), torch.nn.Linear(64, 5))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(150):
        episode = tasks.sample(generator_for(0, 7, step), 16)
        loss = cross_entropy(net(episode.query_x.flatten(0, 1)), episode.query_y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    episode = tasks.sample(generator_for(0, 8), 200)
    with torch.no_grad():
        accuracy = (net(episode.query_x.flatten(0, 1)).argmax(-1) == episode.query_y.flatten()).double().mean()
    assert abs(accuracy - 0.2) < 0.02, accuracy  # 200 x 25 queries: chance is 0.2 +- 0.011 (95%)


@pytest.fixture(scope="module")
def omniglot_problem(omniglot_dir):
    from metalab.problem import build_problem

    return build_problem(preset("omniglot-5w1s-average").replace(queries=5), omniglot_dir, parts=("train",))


@pytest.mark.parametrize("preset_name", ["omniglot-5w1s-attention", "sinusoid-average", "sinusoid-snail",
                                         "sinusoid-metanet"])
def test_train_and_eval_commands_run_a_black_box_learner(preset_name, tmp_path, omniglot_dir, capsys):
    from metalab.cli.main import main

    out = tmp_path / "run"
    data = ["--data-dir", str(omniglot_dir)]
    assert main(["train", "--preset", preset_name, *data, "--steps", "4", "--val-every", "2", "--val-episodes", "4",
                 "--meta-batch-size", "2", "--width", "16", "--hidden", "8", "--out-dir", str(out)]) == 0
    assert main(["eval", str(out / "best.pt"), *data, "--episodes", "6", "--shots", "2",
                 "--save-scores", str(tmp_path / "s.npy")]) == 0
    printed = capsys.readouterr().out
    assert "after reading the support set" in printed and "inner steps" not in printed
    import numpy as np

    assert np.load(tmp_path / "s.npy").shape == (1, 6)
    if preset_name == "omniglot-5w1s-attention":  # its label inputs are 5 wide: no other number of ways
        assert main(["eval", str(out / "best.pt"), *data, "--episodes", "2", "--ways", "3"]) == 2
        assert "--ways 5" in capsys.readouterr().err


def test_feedforward_average_trained_at_one_number_of_ways_is_evaluated_at_others(tmp_path, omniglot_dir, capsys):
    """Its parameters do not depend on the number of ways (a shared scorer rates each class), so a model trained
    20-way serves 5-way tasks too."""
    from metalab.cli.main import main

    out, data = tmp_path / "run", ["--data-dir", str(omniglot_dir)]
    assert main(["train", "--preset", "omniglot-5w1s-average", *data, "--ways", "20", "--steps", "2", "--val-every", "2",
                 "--val-episodes", "2", "--meta-batch-size", "2", "--width", "16", "--hidden", "8",
                 "--out-dir", str(out)]) == 0
    for ways in ("5", "20"):
        assert main(["eval", str(out / "best.pt"), *data, "--episodes", "4", "--ways", ways]) == 0
        assert f"{ways}-way 1-shot 15-query, 4 test episodes" in capsys.readouterr().out


def test_embedding_from_another_checkpoint_starts_the_embedding_only(tmp_path):
    from metalab import checkpoint
    from metalab.errors import MetalabError

    source = classifier("average", seed=1)
    path = tmp_path / "average.pt"
    checkpoint.save(path, {"meta": {"theta": dict(source.model.named_parameters())}})
    learner = classifier("mann", seed=2)
    own = dict(learner.model.named_parameters())
    theta = blackbox.BlackBoxMethod(learner, embedding_from=str(path)).init_meta()["theta"]
    embed = [name for name in theta if name.startswith("embed.")]
    assert embed and all(torch.equal(theta[n], source.model.get_parameter(n)) for n in embed)
    assert not any(torch.equal(theta[n], own[n]) for n in embed if own[n].dim() > 1)
    assert all(torch.equal(theta[n], own[n]) for n in theta if n not in embed)
    assert all(p.requires_grad and p.is_leaf for p in theta.values())

    with pytest.raises(MetalabError, match="raw pixels"):
        blackbox.BlackBoxMethod(classifier("mann", "pixels"), embedding_from=str(path)).init_meta()
    wider = Learner(blackbox_model("mann", (1, SIZE, SIZE), WAYS, WAYS, True, hidden=6, width=16, memory_slots=8),
                    cross_entropy)
    with pytest.raises(MetalabError, match="does not fit.*--hidden"):
        blackbox.BlackBoxMethod(wider, embedding_from=str(path)).init_meta()
    with pytest.raises(MetalabError, match="no checkpoint"):
        blackbox.BlackBoxMethod(learner, embedding_from=str(tmp_path / "missing.pt")).init_meta()
    with pytest.raises(MetalabError, match="--embedding-from"):
        make_method(preset("omniglot-5w1s-maml").replace(embedding_from=str(path)), learner)
