"""Shared fixtures: the real Omniglot archives (read-only) and a private cache folder per session."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tests parametrized over DEVICES run on CPU everywhere and on a GPU where there is one (CI has none).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def analysis_script(name: str):
    """docs/analysis/NAME.py imported as a module (the scripts are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "docs" / "analysis" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_data_dir() -> Path | None:
    for candidate in (os.environ.get("METALAB_DATA"), REPO.parent / "shared" / "data" / "omniglot"):
        if candidate and (Path(candidate) / "images_background_small1.zip").exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("the minimal Omniglot archives are not here: set METALAB_DATA to their folder")
    return path


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never read or write the user's real cache."""
    cache = tmp_path_factory.mktemp("metalab-cache")
    previous = os.environ.get("METALAB_CACHE")
    os.environ["METALAB_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("METALAB_CACHE", None)
    else:
        os.environ["METALAB_CACHE"] = previous


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def minimal(omniglot_dir):
    """(Omniglot, Split) of the minimal split, loaded once."""
    from metalab.data.splits import load_split_data

    return load_split_data("minimal", omniglot_dir, download_missing=False)


def random_image_tasks(ways: int, shots: int, queries: int, size: int, seed: int = 0, tasks: int = 2):
    """(support_x [tasks, ways*shots, 1, size, size], support_y [tasks, ways*shots] random labels,
    query_x [tasks, ways*queries, 1, size, size]) in float64: random images for a black-box learner's tests."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(tasks, ways * shots, 1, size, size, generator=g, dtype=torch.float64),
            torch.randint(0, ways, (tasks, ways * shots), generator=g),
            torch.rand(tasks, ways * queries, 1, size, size, generator=g, dtype=torch.float64))


def run_tiny_study(name: str, out: Path, data_dir: Path | None = None) -> tuple[dict, str]:
    """`metalab study NAME --train tiny` into `out` (asserting it succeeds): (its results.json cells, report.md)."""
    import json

    from metalab.cli.main import main

    argv = ["study", name, "--train", "tiny", "--threads", "1", "--out", str(out)]
    assert main(argv + (["--data-dir", str(data_dir)] if data_dir else [])) == 0
    return json.loads((out / "results.json").read_text())["cells"], (out / "report.md").read_text()


def train_tiny(out: Path, data_dir: Path, preset: str = "omniglot-demo", *flags: str) -> Path:
    """`metalab train --preset PRESET` for 2 steps at 8 channels into `out` (asserting it succeeds): its best.pt."""
    from metalab.cli.main import main

    assert main(["train", "--preset", preset, "--data-dir", str(data_dir), "--steps", "2", "--meta-batch-size", "2",
                 "--hidden", "8", "--val-every", "2", "--val-episodes", "2", "--threads", "1", "--out-dir", str(out),
                 *flags]) == 0
    return out / "best.pt"
