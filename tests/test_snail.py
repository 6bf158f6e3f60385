"""SNAIL: causal blocks checked against independent references, and the one-pass query reading against the
paper's one query per sequence."""

import pytest
import torch
from conftest import random_image_tasks

from metalab.models.learners import blackbox_model
from metalab.models.snail import AttentionBlock, DenseBlock

WAYS, SHOTS, QUERIES, SIZE = 3, 2, 4, 8


def snail(standardize_embedding="conv4", seed=0):
    torch.manual_seed(seed)
    return blackbox_model("snail", (1, SIZE, SIZE), WAYS, WAYS, True, embedding=standardize_embedding, hidden=4,
                          sequence_length=WAYS * SHOTS + 1).double()


def episode(seed=0, tasks=2):
    return random_image_tasks(WAYS, SHOTS, QUERIES, SIZE, seed, tasks)


def test_the_tc_blocks_follow_the_paper():
    """T = 7 items: ceil(log2 7) = 3 dense blocks per TC block, dilations 2, 4, 8 (the paper's 2^i, i = 1..3),
    and the paper's widths: 3 attention blocks of (key, value) (64, 32), (256, 128), (512, 256)."""
    model = snail()
    dense = [b.dilation for b in model.blocks if isinstance(b, DenseBlock)]
    attention = [(b.key.out_features, b.value.out_features) for b in model.blocks if isinstance(b, AttentionBlock)]
    assert dense == [2, 4, 8, 2, 4, 8]
    assert attention == [(64, 32), (256, 128), (512, 256)]
    items = model.blocks[0].key.in_features  # embedding + labels
    assert model.head.in_features == items + 32 + 3 * 128 + 128 + 3 * 128 + 256  # each block's output concatenated


def test_a_dense_block_is_a_causal_dilated_convolution_pair():
    """Against torch's conv1d with left padding (the textbook causal convolution)."""
    torch.manual_seed(0)
    block = DenseBlock(5, 3, dilation=2).double()
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    kernel = torch.stack([block.past.weight, block.now.weight], dim=-1)  # [2F, d, 2]: taps at t - R and t
    conv = torch.nn.functional.conv1d(torch.nn.functional.pad(x.transpose(1, 2), (2, 0)), kernel, block.now.bias,
                                      dilation=2).transpose(1, 2)
    a, b = conv.chunk(2, dim=-1)
    torch.testing.assert_close(block.sequence(x), torch.cat([x, torch.tanh(a) * torch.sigmoid(b)], dim=-1))


def test_attention_weights_each_query_over_the_past_keys():
    """Item t's read is the softmax over keys s <= t (each row sums to 1): item 0 reads its own value exactly,
    item t the explicit mix of values 0..t."""
    torch.manual_seed(0)
    block = AttentionBlock(5, 4, 3).double()
    x = torch.randn(2, 6, 5, dtype=torch.float64)
    read = block.sequence(x)[..., 5:]
    torch.testing.assert_close(read[:, 0], block.value(x[:, 0]))
    for t in range(6):
        logits = torch.einsum("bk,bsk->bs", block.query_map(x[:, t]), block.key(x[:, : t + 1])) / 2  # sqrt(4)
        expected = torch.einsum("bs,bsv->bv", torch.softmax(logits, dim=-1), block.value(x[:, : t + 1]))
        torch.testing.assert_close(read[:, t], expected)


@pytest.mark.parametrize("t", [0, 3, 5])
def test_changing_item_t_plus_1_changes_no_output_up_to_t(t):
    model = snail()
    tokens = torch.randn(2, 7, model.blocks[0].key.in_features, dtype=torch.float64)
    changed = tokens.clone()
    changed[:, t + 1 :] += torch.randn_like(changed[:, t + 1 :])
    before, after = model.sequence(tokens), model.sequence(changed)
    assert torch.equal(before[:, : t + 1], after[:, : t + 1])
    assert not torch.allclose(before[:, t + 1], after[:, t + 1])


@pytest.mark.parametrize("embedding", ["conv4", "pixels"])
def test_reading_all_queries_in_one_pass_equals_one_sequence_per_query(embedding):
    """The paper's sequence (support items, then one query) read at its last position, for each query alone,
    equals the masked one-pass reading of every query."""
    model = snail(embedding)
    support_x, support_y, query_x = episode()
    one_pass = model("predict", model("adapt", support_x, support_y), query_x)  # [B, Q, N]
    support, queries, _ = model.episode_tokens(support_x, support_y, query_x)
    for j in range(queries.shape[1]):
        alone = model.sequence(torch.cat([support, queries[:, j : j + 1]], dim=1))[:, -1]
        torch.testing.assert_close(one_pass[:, j], alone, rtol=1e-10, atol=1e-10)


def test_no_query_sees_another_query():
    model = snail()
    support_x, support_y, query_x = episode()
    before = model("predict", model("adapt", support_x, support_y), query_x)
    changed = query_x.clone()
    changed[:, 1:] = torch.rand_like(changed[:, 1:])
    after = model("predict", model("adapt", support_x, support_y), changed)
    assert torch.equal(before[:, 0], after[:, 0]) and not torch.allclose(before[:, 1:], after[:, 1:])
