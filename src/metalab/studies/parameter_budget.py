"""Networks of a fixed parameter count: the width at which a model of given depth (or a black-box learner) has
as many parameters as a budget, for the depth study (Finn & Levine 2018: 1 to 5 hidden layers at the parameter
count of one hidden layer of 250 units)."""

from typing import Callable, Iterable

from metalab.config import Config
from metalab.problem import build_problem


def width_for_budget(count: Callable[[int], int], budget: int, widths: Iterable[int] = range(1, 1025)) -> int:
    """The width w among `widths` whose count(w) is nearest `budget` (the smaller w on a tie)."""
    return min(widths, key=lambda w: (abs(count(w) - budget), w))


def model_parameters(config: Config) -> int:
    """Parameters of the network (or black-box learner) that `config`'s problem builds."""
    return sum(p.numel() for p in build_problem(config, parts=("train",)).learner.model.parameters())


def relative_gap(count: int, budget: int) -> float:
    """(count - budget) / budget: how far a model is from the budget, as a fraction."""
    return (count - budget) / budget
