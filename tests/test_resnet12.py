"""ResNet-12: its block by hand, its shapes, second-order MAML through it against an unrolled reference written
out by hand (in the loop and under vmap), the prototypical network's per-image embedding, the command line."""

import pytest
import torch
import torch.nn.functional as F
from conftest import train_tiny
from test_optimization import metalab_meta_gradient, reference_meta_gradient, theta_grads

from metalab.cli.main import main
from metalab.data.episode import Episode
from metalab.models.networks import ResidualBlock, image_classifier, resnet12_body

WAYS, SHOTS, QUERIES, TASKS, SIZE = 3, 1, 2, 2, 16


def test_a_residual_block_is_three_convolutions_and_a_projection_by_hand():
    torch.manual_seed(0)
    block = ResidualBlock(3, 4, norm="group").double()
    for module in block.modules():
        if isinstance(module, torch.nn.GroupNorm):  # not the identity, so that a misplaced norm shows
            torch.nn.init.normal_(module.weight)
            torch.nn.init.normal_(module.bias)
    c, s = block.convs, block.shortcut
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)

    def conv_norm(h, conv, norm, padding=1):
        return F.group_norm(F.conv2d(h, conv.weight, padding=padding), 1, norm.weight, norm.bias)

    h = F.leaky_relu(conv_norm(x, c[0], c[1]), 0.1)
    h = F.leaky_relu(conv_norm(h, c[3], c[4]), 0.1)
    h = conv_norm(h, c[6], c[7]) + conv_norm(x, s[0], s[1], padding=0)
    torch.testing.assert_close(block(x), F.max_pool2d(F.leaky_relu(h, 0.1), 2), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size, features", [(28, 8 * 4), (84, 8 * 4 * 5 * 5)])
def test_widths_double_per_block_and_each_block_halves_the_image(size, features):
    body, count = resnet12_body(1, hidden=4, image_size=size)
    assert count == features
    assert body(torch.rand(3, 1, size, size)).shape == (3, features)
    widths = [m.out_channels for m in body.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1)]
    assert widths == [4, 8, 16, 32]


def reference_resnet12(params: list, x):
    """ResNet-12 with batch norm written out by hand: params in the order of model.parameters()."""

    def conv_norm(h, conv_w, norm_w, norm_b):
        h = F.conv2d(h, conv_w, padding=conv_w.shape[-1] // 2)
        mean, var = h.mean(dim=(0, 2, 3), keepdim=True), h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + 1e-5) * norm_w.view(1, -1, 1, 1) + norm_b.view(1, -1, 1, 1)

    h = x
    for block in range(4):
        c1, c2, c3, shortcut = (params[12 * block + 3 * i: 12 * block + 3 * i + 3] for i in range(4))
        y = F.leaky_relu(conv_norm(h, *c1), 0.1)
        y = F.leaky_relu(conv_norm(y, *c2), 0.1)
        h = F.max_pool2d(F.leaky_relu(conv_norm(y, *c3) + conv_norm(h, *shortcut), 0.1), 2)
    return h.flatten(1) @ params[48].T + params[49]


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_maml_through_resnet12_equals_the_unrolled_reference_in_the_loop_and_under_vmap(steps):
    torch.manual_seed(0)
    model = image_classifier("resnet12", WAYS, hidden=2, image_size=SIZE).double()
    g = torch.Generator().manual_seed(1)
    episode = Episode(torch.rand(TASKS, WAYS * SHOTS, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
                      torch.arange(WAYS).repeat(TASKS, SHOTS),
                      torch.rand(TASKS, WAYS * QUERIES, 1, SIZE, SIZE, generator=g, dtype=torch.float64),
                      torch.randint(0, WAYS, (TASKS, WAYS * QUERIES), generator=g))
    expected = reference_meta_gradient(model, episode, steps, forward=reference_resnet12)
    for batching in ("loop", "vmap"):
        got = theta_grads(metalab_meta_gradient(model, episode, steps, batching=batching))
        for e, g in zip(expected, got, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-10)


def test_the_prototypical_embedding_reads_each_image_alone():
    from metalab.config import preset
    from metalab.methods.protonet import embedding_network

    torch.manual_seed(0)
    config = preset("omniglot-5w1s-protonet").replace(embedding="resnet12", hidden=2)
    network = embedding_network(config, (1, 28, 28), 5).double()
    images = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    changed = torch.cat([images[:1], torch.rand(3, 1, 28, 28, dtype=torch.float64)])
    torch.testing.assert_close(network(images)[0], network(changed)[0], rtol=1e-12, atol=1e-12)


def test_trained_and_evaluated_from_the_command_line(tmp_path, omniglot_dir):
    best = train_tiny(tmp_path / "pn", omniglot_dir, "omniglot-5w1s-protonet", "--embedding", "resnet12")
    assert main(["eval", str(best), "--data-dir", str(omniglot_dir), "--episodes", "2", "--threads", "1"]) == 0


def test_raw_pixels_are_refused_for_a_method_that_needs_an_image_network(tmp_path, omniglot_dir, capsys):
    assert main(["train", "--preset", "omniglot-demo", "--embedding", "pixels", "--data-dir", str(omniglot_dir),
                 "--steps", "1", "--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use --embedding conv4 or resnet12" in err
    assert not list((tmp_path / "run").glob("*.pt"))
