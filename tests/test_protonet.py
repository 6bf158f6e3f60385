"""Prototypical networks: logits by hand, invariances, no query sees another, they memorize, other ways."""

import json

import pytest
import torch

from metalab.config import preset
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods.learner import classification
from metalab.methods.protonet import PrototypicalNetwork, embedding_network, prototype_logits

WAYS, SHOTS, QUERIES, TASKS, SIZE = 3, 2, 4, 2, 8


def protonet(seed=0):
    torch.manual_seed(seed)
    config = preset("omniglot-5w1s-protonet").replace(ways=WAYS, hidden=4, embedding="conv4")
    learner = classification(embedding_network(config, (1, SIZE, SIZE), WAYS).double())
    return PrototypicalNetwork.from_config(config, learner)


def episode(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(WAYS).repeat_interleave(SHOTS)
    return Episode(torch.rand(TASKS, WAYS * SHOTS, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
                   torch.stack([labels[torch.randperm(WAYS * SHOTS, generator=g)] for _ in range(TASKS)]),
                   torch.rand(TASKS, WAYS * QUERIES, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
                   torch.randint(0, WAYS, (TASKS, WAYS * QUERIES), generator=g))


def logits(method, batch):
    return prototype_logits(method.learner.model, method.init_meta()["theta"], batch)


def test_logits_are_minus_squared_distances_to_class_means_by_hand():
    method, batch = protonet(), episode()
    model = method.learner.model
    got = logits(method, batch)
    for t in range(TASKS):
        support = [model(batch.support_x[t, i : i + 1])[0] for i in range(WAYS * SHOTS)]  # one image at a time
        prototypes = []
        for k in range(WAYS):
            members = [z for z, label in zip(support, batch.support_y[t]) if label == k]
            prototypes.append(sum(members) / len(members))
        for q in range(WAYS * QUERIES):
            query = model(batch.query_x[t, q : q + 1])[0]
            for k, prototype in enumerate(prototypes):
                expected = -sum((query[d] - prototype[d]) ** 2 for d in range(len(query)))
                torch.testing.assert_close(got[t, q, k], expected, rtol=1e-10, atol=1e-12)


def test_relabelling_the_classes_permutes_the_logits_and_keeps_the_loss():
    method, batch = protonet(), episode()
    relabel = torch.tensor([2, 0, 1])
    relabelled = batch._replace(support_y=relabel[batch.support_y], query_y=relabel[batch.query_y])
    before, after = logits(method, batch), logits(method, relabelled)
    torch.testing.assert_close(after[:, :, relabel], before, rtol=1e-12, atol=1e-12)
    meta = method.init_meta()
    torch.testing.assert_close(method.meta_loss(meta, relabelled, 0)[0], method.meta_loss(meta, batch, 0)[0])


def test_the_order_of_queries_and_of_the_support_set_does_not_matter():
    method, batch = protonet(), episode()
    g = torch.Generator().manual_seed(1)
    queries, support = torch.randperm(WAYS * QUERIES, generator=g), torch.randperm(WAYS * SHOTS, generator=g)
    shuffled = Episode(batch.support_x[:, support], batch.support_y[:, support], batch.query_x[:, queries],
                       batch.query_y[:, queries])
    torch.testing.assert_close(logits(method, shuffled), logits(method, batch)[:, queries], rtol=1e-12, atol=1e-12)


def test_a_query_prediction_depends_on_the_support_set_and_that_query_only():
    """Per-image norm: no query's logits change with another query or another task (batch norm over the episode
    would make them)."""
    method, batch = protonet(), episode()
    query_x, support_x = (t.clone().requires_grad_(True) for t in (batch.query_x, batch.support_x))
    out = logits(method, batch._replace(query_x=query_x, support_x=support_x))
    grad_query, grad_support = torch.autograd.grad(out[0, 0].sum(), (query_x, support_x))
    assert grad_query[0, 0].abs().sum() > 0 and grad_support[0].abs().sum() > 0
    assert grad_query[0, 1:].abs().sum() == 0 and grad_query[1:].abs().sum() == 0 and grad_support[1:].abs().sum() == 0
    alone = batch._replace(query_x=batch.query_x[:, :1], query_y=batch.query_y[:, :1])
    torch.testing.assert_close(logits(method, alone)[:, 0], logits(method, batch)[:, 0], rtol=1e-12, atol=1e-12)


def test_it_memorizes_a_fixed_set_of_tasks():
    """Queried on its own support images, the loss goes to near zero: the embedding can gather each class."""
    method, batch = protonet(seed=3), episode(seed=3)
    batch = batch._replace(query_x=batch.support_x, query_y=batch.support_y)
    meta = method.init_meta()
    optimizer = torch.optim.Adam(list(meta["theta"].values()), lr=3e-2)
    first = None
    for step in range(60):
        optimizer.zero_grad()
        loss, _ = method.meta_loss(meta, batch, step)
        loss.backward()
        first = first if first is not None else loss.item()
        optimizer.step()
    assert loss.item() < 0.02 * first, (first, loss.item())
    assert (method.scores(meta, batch, 0) == 1).all()


def test_protonet_needs_images():
    with pytest.raises(MetalabError, match="--problem omniglot"):
        embedding_network(preset("sinusoid-maml").replace(method="protonet"), (1,), 1)


def test_trained_at_20_ways_it_is_evaluated_at_5_and_20(tmp_path, omniglot_dir, capsys):
    """Its parameters do not depend on the number of ways: the training-ways trick."""
    from metalab.cli.main import main

    out, data = tmp_path / "run", ["--data-dir", str(omniglot_dir)]
    assert main(["train", "--preset", "omniglot-20w1s-protonet", *data, "--steps", "2", "--val-every", "2",
                 "--val-episodes", "2", "--meta-batch-size", "2", "--hidden", "8", "--out-dir", str(out)]) == 0
    for ways in ("5", "20"):
        assert main(["eval", str(out / "best.pt"), *data, "--episodes", "4", "--ways", ways]) == 0
        printed = capsys.readouterr().out
        assert f"{ways}-way 1-shot 15-query, 4 test episodes" in printed and "after reading the support set" in printed


def test_trained_60_way_it_is_validated_at_5_ways(tmp_path, omniglot_dir):
    """The minimal split's validation part has fewer characters than 60: --val-ways sets the validation episodes'
    ways on its own, for a method that reads the number of ways from each episode."""
    from metalab.cli.main import main
    from metalab.problem import build_problem

    config = preset("omniglot-20w1s-protonet").replace(ways=60, val_ways=5)
    tasks = build_problem(config, omniglot_dir, parts=("train", "val")).tasks
    assert (tasks["train"].ways, tasks["val"].ways) == (60, 5)
    with pytest.raises(MetalabError, match="classes"):
        build_problem(config.replace(val_ways=0), omniglot_dir, parts=("val",))
    for other in ("omniglot-20w1s-maml", "omniglot-5w1s-average"):
        with pytest.raises(MetalabError, match="--val-ways 3 needs a method that reads the number of ways"):
            build_problem(preset(other).replace(val_ways=3), omniglot_dir, parts=("val",))
    out, data = tmp_path / "run", ["--data-dir", str(omniglot_dir)]
    assert main(["train", "--preset", "omniglot-20w1s-protonet", *data, "--ways", "60", "--val-ways", "5",
                 "--steps", "2", "--val-every", "2", "--val-episodes", "2", "--meta-batch-size", "1", "--hidden", "8",
                 "--out-dir", str(out)]) == 0
    validated = [json.loads(line)["val"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert validated and all(0 < accuracy <= 1 for accuracy in validated)  # 5-way episodes scored, not NaN
    assert main(["eval", str(out / "best.pt"), *data, "--episodes", "2", "--ways", "5", "--part", "val"]) == 0
