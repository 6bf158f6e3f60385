"""From a Config to the concrete problem: task distributions, and the Learner (network, loss, metric)."""

from dataclasses import dataclass

from metalab.config import Config
from metalab.data.augment import AugmentedTasks
from metalab.data.classification import ROTATIONS, omniglot_tasks
from metalab.data.episode import TaskDistribution
from metalab.data.new_characters import with_new_characters
from metalab.data.new_drawers import with_new_drawers
from metalab.data.polynomial import PolynomialTasks
from metalab.data.sinusoid import SinusoidTasks
from metalab.data.splits import keep_train_alphabets, load_split_data
from metalab.errors import MetalabError
from metalab.methods import registry
from metalab.methods.learner import Learner, classification, regression
from metalab.models.learners import blackbox_model
from metalab.models.networks import image_classifier, mlp

# Evaluation query-set sizes, whatever the training used: 15 per class is the field's standard for Omniglot;
# 100 points per regression task make each task's MSE a low-noise estimate.
EVAL_QUERIES = {"omniglot": 15, "sinusoid": 100, "polynomial": 100}


@dataclass
class Problem:
    learner: Learner  # the network (or black-box learner), its loss and metric
    tasks: dict[str, TaskDistribution]  # "train", "val", "test"


def build_problem(config: Config, data_dir=None, parts=("train", "val", "test"),
                  held_out_within_alphabet: float = 0.0) -> Problem:
    """The config's problem; meta-training tasks are within-alphabet with probability config.within_alphabet,
    meta-validation and meta-test ones with probability `held_out_within_alphabet` (evaluation's choice)."""
    entry = registry.entry(config.method)  # an unknown method fails here, before any data is read
    if config.val_ways and config.val_ways != config.ways and not entry.any_ways:
        raise MetalabError(f"--val-ways {config.val_ways} needs a method that reads the number of ways from each "
                           f"episode (protonet); {config.method} is built for {config.ways} ways: drop --val-ways")
    if config.problem != "omniglot":
        if held_out_within_alphabet:
            raise MetalabError(f"--within-alphabet draws Omniglot classes from one alphabet; a {config.problem} model "
                               "has no classes: drop --within-alphabet")
        tasks = regression_tasks(config)
        return Problem(regression(_network(config, entry.blackbox, x_shape=(1,), outputs=1)),
                       dict.fromkeys(parts, tasks))
    data, split = load_split_data(config.split, data_dir)
    if config.train_alphabets:
        split = keep_train_alphabets(split, data, config.train_alphabets)
    # Only the meta-train part gets re-drawings and new characters; the other parts keep the bank as it is.
    train_data, train_split = data, split
    if "train" in parts and config.stroke_characters:
        train_data, train_split = with_new_characters(data, split, config.stroke_characters, config.seed, data_dir)
    if "train" in parts and config.stroke_drawers:
        train_data = with_new_drawers(data, split, config.stroke_drawers, config.seed, data_dir)
    tasks = {}
    for part in parts:
        training = part == "train"
        rotations = ROTATIONS if (training and config.rotations) else (0,)
        ways = config.val_ways if part == "val" and config.val_ways else config.ways
        within = config.within_alphabet if training else held_out_within_alphabet
        tasks[part] = omniglot_tasks(train_data if training else data, train_split if training else split, part,
                                     ways, config.shots, config.queries, rotations,
                                     mirrors=training and config.mirrors, within_alphabet=within)
        if training and (config.augment > 0 or config.elastic_alpha > 0):
            elastic = (config.elastic_alpha, config.elastic_sigma) if config.elastic_alpha > 0 else None
            tasks[part] = AugmentedTasks(tasks[part], config.augment, elastic)
    return Problem(image_learner(config), tasks)


def image_learner(config: Config) -> Learner:
    """The Learner of an Omniglot config (28x28 images, config.ways classes), built without reading any data:
    what a benchmark that brings its own images (Lake's one-shot runs) evaluates."""
    blackbox = registry.entry(config.method).blackbox
    return classification(_network(config, blackbox, x_shape=(1, 28, 28), outputs=config.ways), config.label_smoothing)


def regression_tasks(config: Config) -> SinusoidTasks | PolynomialTasks:
    """The config's regression tasks (every part alike): sinusoids in its amplitude and phase ranges, or cubics."""
    if config.problem == "polynomial":
        return PolynomialTasks(config.shots, config.queries)
    return SinusoidTasks(config.shots, config.queries, amplitude=(config.amplitude_min, config.amplitude_max),
                         phase=(config.phase_min, config.phase_max))


def support_size(config: Config) -> int:
    """Examples in a task's support set: N * K for classification, K points for regression."""
    return config.ways * config.shots if config.problem == "omniglot" else config.shots


def _network(config: Config, blackbox: bool, x_shape: tuple, outputs: int):
    images = len(x_shape) == 3
    entry = registry.entry(config.method)
    if images and config.embedding == "pixels" and not blackbox:
        raise MetalabError(f"--embedding pixels feeds raw pixels to a black-box learner; {config.method} needs an "
                           "image network: use --embedding conv4 or resnet12")
    if entry.network is not None:
        return entry.network(config, x_shape, outputs)
    if blackbox:
        return blackbox_model(config.method, x_shape, label_dim=outputs, out_dim=outputs, classification=images,
                              embedding=config.embedding if images else "mlp", hidden=config.hidden,
                              pooling=config.pooling, width=config.width, layers=config.layers,
                              memory_slots=config.memory_slots,
                              sequence_length=config.sequence_length or support_size(config) + 1)
    if images:
        # The one place the norm layer is chosen: torch.func transforms inside vmap differentiate the written-out
        # batch norm exactly, torch's own not (docs/design.md); everywhere else torch's is exact and the faster.
        # Same function, same parameters.
        norm = "set_batch" if config.task_batching == "vmap" and entry.vmap_transforms else "batch"
        return image_classifier(config.embedding, outputs, hidden=config.hidden, pooling=config.pooling, norm=norm)
    return mlp(1, config.hidden, config.hidden_layers, bias_transformation=config.bias_transformation)
