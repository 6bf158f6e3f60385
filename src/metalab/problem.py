"""From a Config to the concrete problem: task distributions, network and loss."""

from dataclasses import dataclass

from metalab.config import Config
from metalab.data.episodes import ROTATIONS, omniglot_tasks
from metalab.data.sinusoid import SinusoidTasks
from metalab.data.splits import load_split_data
from metalab.data.tasks import TaskDistribution
from metalab.methods.optimization import InnerLoop, Learner, cross_entropy, mse
from metalab.models.networks import conv4, mlp


@dataclass
class Problem:
    learner: Learner
    inner: InnerLoop
    tasks: dict[str, TaskDistribution]  # "train", "val", "test"


def build_problem(config: Config, data_dir=None, parts=("train", "val", "test")) -> Problem:
    inner = InnerLoop(config.method, config.inner_lr, config.lr_shape)
    if config.problem == "sinusoid":
        tasks = SinusoidTasks(config.shots, config.queries)
        return Problem(Learner(mlp(1, config.hidden), mse), inner, {part: tasks for part in parts})
    data, split = load_split_data(config.split, data_dir)
    tasks = {}
    for part in parts:
        rotations = ROTATIONS if (part == "train" and config.rotations) else (0,)
        tasks[part] = omniglot_tasks(data, split, part, config.ways, config.shots, config.queries, rotations)
    model = conv4(config.ways, hidden=config.hidden, pooling=config.pooling)
    return Problem(Learner(model, cross_entropy), inner, tasks)
