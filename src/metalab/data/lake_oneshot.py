"""Lake's 20-way within-alphabet one-shot classification benchmark (Lake et al., Science 2015).

The benchmark is 20 fixed runs (archive `all_runs.zip`, brendenlake/omniglot, python/one-shot-classification).
Each run holds 20 characters of one alphabet of the evaluation set, one drawing of each as the "training"
image and another drawer's drawing of each as a "test" item::

    runNN/training/class01.png .. class20.png   the support set: class KK gets label KK-1
    runNN/test/item01.png .. item20.png         the queries, in this order
    runNN/class_labels.txt                      lines "runNN/test/itemMM.png runNN/training/classKK.png"

Images are 105x105 and go through the same preprocessing as the training data (`omniglot.preprocess_image`),
so a model trained on `load_omniglot` sees the benchmark exactly as it saw its training images. The score
is the error rate in percent per run and its mean over runs (the number Lake et al. report).

    runs = load_runs("all_runs.zip")             # or an extracted folder
    predicted = my_method(as_episode(runs))       # int64 [R, 20], labels 0..19
    print(format_table(score(runs, predicted)))
"""

import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metalab.data import download, paths
from metalab.data.episode import Episode
from metalab.data.omniglot import SOURCE_SIZE, Preprocessing, preprocess_image
from metalab.errors import MetalabError

WAYS = 20  # classes per run; also the number of test items per run
ARCHIVE = "all_runs"
_FIX = ("replace it with the official all_runs.zip from brendenlake/omniglot (python/one-shot-classification), "
        "unmodified, or its extracted folder")
_RUN = re.compile(r"^run(\d+)$")
_ITEM = re.compile(r"^(?P<run>run\d+)/test/item(?P<number>\d+)\.png$")
_CLASS = re.compile(r"^(?P<run>run\d+)/training/class(?P<number>\d+)\.png$")


@dataclass(frozen=True)
class OneShotRuns:
    """The benchmark's runs, preprocessed. R runs, N = 20 classes, S = settings.size.

    support_x: float32 [R, N, 1, S, S] in [0, 1], ink high; row k is runNN/training/class{k+1}.png
    support_y: int64   [R, N], support_y[r, k] = k
    query_x:   float32 [R, N, 1, S, S] in [0, 1]; row m is runNN/test/item{m+1}.png
    query_y:   int64   [R, N], the true label of each query, from class_labels.txt
    names:     the run folder names ("run01", ...), in run-number order
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    names: tuple[str, ...]

    @property
    def num_runs(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class OneShotScore:
    """errors: float64 [R], percent of the run's 20 queries misclassified; mean: their mean over runs."""

    names: tuple[str, ...]
    errors: np.ndarray
    mean: float


def load_runs(path, settings: Preprocessing = Preprocessing()) -> OneShotRuns:
    """Read the benchmark from `all_runs.zip` or a folder extracted from it.

    The run folders may sit at the top of the zip/folder or inside its single top folder. Every run
    present is loaded, in run-number order; a missing or malformed file is a MetalabError naming it.
    """
    with _open_tree(Path(path)) as tree:
        names = tree.runs()
        support, query, labels = [], [], []
        for run in names:
            support.append([_image(tree, f"{run}/training/class{k:02d}.png", settings) for k in range(1, WAYS + 1)])
            query.append([_image(tree, f"{run}/test/item{m:02d}.png", settings) for m in range(1, WAYS + 1)])
            labels.append(_labels(tree, run))
    return OneShotRuns(
        support_x=_pixels(np.stack([np.stack(s) for s in support])),
        support_y=torch.arange(WAYS, dtype=torch.int64).repeat(len(names), 1),
        query_x=_pixels(np.stack([np.stack(q) for q in query])),
        query_y=torch.from_numpy(np.stack(labels)),
        names=tuple(names))


def load_benchmark(data_dir=None, download_missing: bool = True,
                   settings: Preprocessing = Preprocessing()) -> OneShotRuns:
    """`load_runs` on the `all_runs` archive in the data folder (fetched first if missing and allowed)."""
    found = download.ensure_archives([ARCHIVE], paths.data_dir(data_dir), download=download_missing)
    return load_runs(found[ARCHIVE][0], settings)


def as_episode(runs: OneShotRuns) -> Episode:
    """The runs as a batch of R 20-way 1-shot tasks with 20 queries each.

    support_x [R, 20, 1, S, S], support_y [R, 20], query_x [R, 20, 1, S, S], query_y [R, 20].
    """
    return Episode(runs.support_x, runs.support_y, runs.query_x, runs.query_y)


def score(runs: OneShotRuns, predicted_labels) -> OneShotScore:
    """Error rate (percent) of `predicted_labels` (integers [R, 20], one per query) in each run, and the mean."""
    predicted = torch.as_tensor(np.asarray(predicted_labels) if not torch.is_tensor(predicted_labels)
                                else predicted_labels).cpu()
    if tuple(predicted.shape) != tuple(runs.query_y.shape):
        raise MetalabError(
            f"predicted labels have shape {tuple(predicted.shape)}, but the benchmark has "
            f"{tuple(runs.query_y.shape)} queries (runs x items); predict one label per query of as_episode(runs)")
    if predicted.dtype.is_floating_point or predicted.dtype.is_complex or predicted.dtype == torch.bool:
        raise MetalabError(f"predicted labels must be integers 0..{WAYS - 1}, got dtype {predicted.dtype}; "
                           "pass class indices (e.g. logits.argmax(-1)), not scores")
    wrong = (predicted.to(torch.int64) != runs.query_y).numpy()
    errors = 100.0 * wrong.mean(axis=1, dtype=np.float64)
    return OneShotScore(names=runs.names, errors=errors, mean=float(errors.mean()))


def format_table(result: OneShotScore) -> str:
    """A plain-text table: one line per run with its error rate, then the mean."""
    width = max([len("mean"), *(len(n) for n in result.names)])
    lines = [f"{'run':<{width}}  error %"]
    lines += [f"{name:<{width}}  {error:7.2f}" for name, error in zip(result.names, result.errors)]
    lines.append(f"{'mean':<{width}}  {result.mean:7.2f}")
    return "\n".join(lines)


def _pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 [R, N, S, S] -> float32 [R, N, 1, S, S] in [0, 1], scaled as the training episodes are."""
    return torch.from_numpy(images).to(torch.float32).mul_(1.0 / 255.0).unsqueeze(2)


def _image(tree: "_Tree", relative: str, settings: Preprocessing) -> np.ndarray:
    source = tree.describe(relative)
    try:
        with Image.open(io.BytesIO(tree.read(relative))) as image:
            if image.size != (SOURCE_SIZE, SOURCE_SIZE):
                raise MetalabError(
                    f"{source}: image is {image.size[0]}x{image.size[1]}, but the one-shot benchmark's images "
                    f"are {SOURCE_SIZE}x{SOURCE_SIZE}; this file was altered: {_FIX}")
            return preprocess_image(image, settings, source)
    except (OSError, zlib.error, EOFError, zipfile.BadZipFile) as error:
        raise MetalabError(f"{source} is not a readable PNG ({error}); {_FIX}") from error


def _labels(tree: "_Tree", run: str) -> np.ndarray:
    """int64 [20]: the true label of item01..item20 of `run`, from its class_labels.txt."""
    relative = f"{run}/class_labels.txt"
    source = tree.describe(relative)
    text = tree.read(relative).decode("utf-8-sig", errors="replace")
    labels = np.full(WAYS, -1, dtype=np.int64)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source} line {number} ({line.strip()!r})"
        fields = line.split()
        item = _ITEM.match(fields[0]) if len(fields) == 2 else None
        klass = _CLASS.match(fields[1]) if item else None
        if item is None or klass is None:
            raise MetalabError(f"{where} does not parse: expected '{run}/test/itemMM.png {run}/training/classKK.png'; "
                               f"{_FIX}")
        if item["run"] != run or klass["run"] != run:
            raise MetalabError(f"{where} names files of another run, but lives in {run}/; {_FIX}")
        for field in fields:
            if not tree.exists(field):
                raise MetalabError(f"{where} names {tree.describe(field)}, which does not exist; {_FIX}")
        m, k = int(item["number"]), int(klass["number"])
        if not (1 <= m <= WAYS and 1 <= k <= WAYS):
            raise MetalabError(f"{where} names a file outside item01..item{WAYS:02d} / class01..class{WAYS:02d} "
                               f"of a {WAYS}-way run; {_FIX}")
        if labels[m - 1] != -1:
            raise MetalabError(f"{where} labels item{m:02d} a second time; {_FIX}")
        labels[m - 1] = k - 1
    missing = [f"item{m + 1:02d}" for m in np.flatnonzero(labels < 0)]
    if missing:
        raise MetalabError(f"{source} gives no class for {', '.join(missing)}; {_FIX}")
    return labels


def _open_tree(path: Path) -> "_Tree":
    if path.is_dir():
        return _FolderTree(path)
    if not path.exists():
        raise MetalabError(f"{path} does not exist; point at all_runs.zip (brendenlake/omniglot, "
                           "python/one-shot-classification) or the folder extracted from it")
    try:
        return _ZipTree(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise MetalabError(f"{path} is not a readable zip archive ({error}); {_FIX}") from error


class _Tree:
    """Files of the benchmark by path relative to the folder that holds the run folders."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass

    def runs(self) -> list[str]:
        raise NotImplementedError

    def exists(self, relative: str) -> bool:
        raise NotImplementedError

    def read(self, relative: str) -> bytes:
        raise NotImplementedError

    def describe(self, relative: str) -> str:
        raise NotImplementedError

    def _missing(self, relative: str):
        return MetalabError(f"{self.describe(relative)} is missing; the run is incomplete: {_FIX}")


def _sorted_runs(names, where) -> list[str]:
    runs = sorted({n for n in names if _RUN.match(n)}, key=lambda n: (int(_RUN.match(n)[1]), n))
    if not runs:
        raise MetalabError(f"{where} holds no run folders (run01, run02, ...); {_FIX}")
    numbers = [int(_RUN.match(n)[1]) for n in runs]
    if len(set(numbers)) != len(numbers):
        raise MetalabError(f"{where} holds two folders for the same run number ({runs}); {_FIX}")
    return runs


class _FolderTree(_Tree):
    def __init__(self, path: Path):
        self.root = path
        if not any(_RUN.match(p.name) and p.is_dir() for p in path.iterdir()):
            # Also accept the folder one level up, e.g. data/ holding all_runs/run01/...
            holders = [p for p in path.iterdir() if p.is_dir() and any(_RUN.match(q.name) and q.is_dir()
                                                                       for q in p.iterdir())]
            if len(holders) > 1:
                found = sorted(h.name for h in holders)
                raise MetalabError(f"{path} holds run folders in several subfolders ({found}); "
                                   "point at the one folder that holds run01, run02, ...")
            if holders:
                self.root = holders[0]

    def runs(self):
        return _sorted_runs([p.name for p in self.root.iterdir() if p.is_dir()], self.root)

    def exists(self, relative):
        return (self.root / relative).is_file()

    def read(self, relative):
        if not self.exists(relative):
            raise self._missing(relative)
        return (self.root / relative).read_bytes()

    def describe(self, relative):
        return str(self.root / relative)


class _ZipTree(_Tree):
    def __init__(self, path: Path):
        self.path = path
        self.archive = zipfile.ZipFile(path)
        files = [n for n in self.archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
        self.prefix = ""
        if not any("/" in n and _RUN.match(n.split("/")[0]) for n in files):  # run folders one level down
            holders = {n.split("/")[0] for n in files if n.count("/") >= 2 and _RUN.match(n.split("/")[1])}
            if len(holders) > 1:
                self.archive.close()
                raise MetalabError(f"{path} holds run folders under several top folders ({sorted(holders)}); {_FIX}")
            self.prefix = f"{holders.pop()}/" if holders else ""
        self.members = {n[len(self.prefix):]: n for n in files if n.startswith(self.prefix)}

    def close(self):
        self.archive.close()

    def runs(self):
        return _sorted_runs([n.split("/")[0] for n in self.members if "/" in n], self.path)

    def exists(self, relative):
        return relative in self.members

    def read(self, relative):
        if relative not in self.members:
            raise self._missing(relative)
        try:
            return self.archive.read(self.members[relative])
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
            raise MetalabError(f"{self.describe(relative)} is corrupt ({error}); {_FIX}") from error

    def describe(self, relative):
        return f"{self.path}:{self.prefix}{relative}"
