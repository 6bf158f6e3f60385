"""Every black-box learner by name, and the one function that builds one."""

from metalab.models import blackbox
from metalab.models.metanet import MetaNetwork
from metalab.models.recurrent import MANN, LSTMLearner
from metalab.models.set_learners import AttentionLearner, AverageLearner
from metalab.models.snail import SNAIL

BLACK_BOX_LEARNERS = ("lstm", "mann", "average", "attention", "snail", "metanet")


def blackbox_model(method: str, x_shape: tuple, label_dim: int, out_dim: int, classification: bool,
                   embedding: str = "conv4", hidden: int = 32, pooling: bool = False, width: int = 128,
                   layers: int = 2, memory_slots: int = 128, sequence_length: int = 0) -> blackbox.BlackBox:
    """The black-box learner `method` over inputs of shape x_shape, with its embedding of one input
    (models/blackbox.py: conv4, pixels or mlp). SNAIL sizes its TC blocks for episodes of sequence_length
    items (support set + 1 query), and its filters and attention by `width` (the paper's at 128)."""
    args = (*blackbox.embedding(embedding, x_shape, hidden, pooling), label_dim, out_dim, classification)
    if method == "lstm":
        return LSTMLearner(*args, hidden=width, layers=layers, standardize=embedding == "conv4")
    if method == "mann":
        return MANN(*args, hidden=width, slots=memory_slots)
    if method == "average":
        return AverageLearner(*args, hidden=width)
    if method == "attention":
        return AttentionLearner(*args, hidden=width, layers=layers)
    if method == "snail":
        # the paper's sizes at width 128: filters 128, attention (64, 32), (256, 128), (512, 256); scaled with width
        attention = tuple((max(1, width * k // 4), max(1, width * v // 4)) for k, v in ((2, 1), (8, 4), (16, 8)))
        return SNAIL(*args, sequence_length=sequence_length, standardize=embedding == "conv4", filters=width,
                     attention=attention)
    if method == "metanet":  # two bodies, as in the paper: the base learner's and the representation function's
        return MetaNetwork(*args, *blackbox.embedding(embedding, x_shape, hidden, pooling), hidden=width)
    raise ValueError(f"unknown black-box method {method!r}; choose one of {BLACK_BOX_LEARNERS}")
