"""Every black-box learner by name, and the one function that builds one."""

from metalab.models import blackbox
from metalab.models.recurrent import MANN, LSTMLearner
from metalab.models.set_learners import AttentionLearner, AverageLearner

BLACK_BOX_LEARNERS = ("lstm", "mann", "average", "attention")


def blackbox_model(method: str, x_shape: tuple, label_dim: int, out_dim: int, classification: bool,
                   embedding: str = "conv4", hidden: int = 32, pooling: bool = False, width: int = 128,
                   layers: int = 2, memory_slots: int = 128) -> blackbox.BlackBox:
    """The black-box learner `method` over inputs of shape x_shape, with its embedding of one input
    (models/blackbox.py: conv4, pixels or mlp)."""
    args = (*blackbox.embedding(embedding, x_shape, hidden, pooling), label_dim, out_dim, classification)
    if method == "lstm":
        return LSTMLearner(*args, hidden=width, layers=layers, standardize=embedding == "conv4")
    if method == "mann":
        return MANN(*args, hidden=width, slots=memory_slots)
    if method == "average":
        return AverageLearner(*args, hidden=width)
    if method == "attention":
        return AttentionLearner(*args, hidden=width, layers=layers)
    raise ValueError(f"unknown black-box method {method!r}; choose one of {BLACK_BOX_LEARNERS}")
