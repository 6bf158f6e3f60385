"""From a Config to the concrete problem: task distributions, network and loss."""

from dataclasses import dataclass

from metalab.config import BLACK_BOX_METHODS, Config
from metalab.data.augment import AugmentedTasks
from metalab.data.episodes import ROTATIONS, omniglot_tasks
from metalab.data.sinusoid import SinusoidTasks
from metalab.data.splits import keep_train_alphabets, load_split_data
from metalab.data.tasks import TaskDistribution
from metalab.methods.learner import Learner, cross_entropy, mse
from metalab.models.blackbox import blackbox_model
from metalab.models.networks import conv4, mlp


@dataclass
class Problem:
    learner: Learner  # the network (or black-box learner) and its loss
    tasks: dict[str, TaskDistribution]  # "train", "val", "test"


def build_problem(config: Config, data_dir=None, parts=("train", "val", "test")) -> Problem:
    if config.problem == "sinusoid":
        tasks = SinusoidTasks(config.shots, config.queries)
        return Problem(Learner(_network(config, x_shape=(1,), outputs=1), mse), {part: tasks for part in parts})
    data, split = load_split_data(config.split, data_dir)
    if config.train_alphabets:
        split = keep_train_alphabets(split, data, config.train_alphabets)
    tasks = {}
    for part in parts:
        training = part == "train"
        rotations = ROTATIONS if (training and config.rotations) else (0,)
        tasks[part] = omniglot_tasks(data, split, part, config.ways, config.shots, config.queries, rotations,
                                     mirrors=training and config.mirrors)
        if training and config.augment > 0:
            tasks[part] = AugmentedTasks(tasks[part], config.augment)
    return Problem(Learner(_network(config, x_shape=(1, 28, 28), outputs=config.ways), cross_entropy), tasks)


def _network(config: Config, x_shape: tuple, outputs: int):
    classification = config.problem == "omniglot"
    if config.method in BLACK_BOX_METHODS:
        return blackbox_model(config.method, x_shape, label_dim=outputs, out_dim=outputs,
                              classification=classification,
                              embedding=config.embedding if classification else "mlp", hidden=config.hidden,
                              pooling=config.pooling, width=config.width, layers=config.layers,
                              memory_slots=config.memory_slots)
    if classification:
        # vmap differentiates the written-out batch norm exactly, torch's own not (models/networks.py); the loop
        # keeps torch's, faster on a CPU. The two are the same function with the same parameters.
        norm = "set_batch" if config.task_batching == "vmap" else "batch"
        return conv4(outputs, hidden=config.hidden, pooling=config.pooling, norm=norm)
    return mlp(1, config.hidden)
