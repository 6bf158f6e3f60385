"""Networks of a fixed parameter count: the width at which a model of given depth (or a black-box learner) has
as many parameters as a budget, for the depth study (Finn & Levine 2018: 1 to 5 hidden layers at the parameter
count of one hidden layer of 250 units)."""

from typing import Callable, Iterable

from metalab.config import Config
from metalab.problem import build_problem


def width_for_budget(count: Callable[[int], int], budget: int, widths: Iterable[int] = range(1, 4097)) -> int:
    """The width w among ascending `widths` whose count(w) is nearest `budget` (the smaller w on a tie). count
    must grow with w: the search stops at the first width whose count reaches the budget (so a learner that
    grows fast is never built far above it)."""
    best, best_gap = None, None
    for width in widths:
        gap = count(width) - budget
        if best is None or abs(gap) < best_gap:
            best, best_gap = width, abs(gap)
        if gap >= 0:
            break
    return best


def model_parameters(config: Config) -> int:
    """Parameters of the network (or black-box learner) that `config`'s problem builds."""
    return sum(p.numel() for p in build_problem(config, parts=("train",)).learner.model.parameters())


def relative_gap(count: int, budget: int) -> float:
    """(count - budget) / budget: how far a model is from the budget, as a fraction."""
    return (count - budget) / budget
