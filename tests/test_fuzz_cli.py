"""Fuzzing the command line (hypothesis, derandomized): every Config field with out-of-range, non-finite and
wrong-type values; truncated and random checkpoints, archives and score files. Every case ends in exit 2 with
one line on stderr and no output file written (a run folder keeps at most its lock file)."""

import dataclasses
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_reliability import SINUSOID, cli

from metalab import checkpoint
from metalab.config import CONFIG_AT_LEAST_ZERO, CONFIG_CHOICES, CONFIG_POSITIVE, Config
from metalab.training import loop

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)
NON_INTEGERS = st.one_of(st.sampled_from(["1.5", "nan", "inf", "1e3", "", "0x10", "three"]), TEXT).filter(
    lambda text: not _is_int(text))
NON_NUMBERS = st.one_of(st.sampled_from(["nan", "inf", "-inf", "NaN", "", "one", "1,5"]), TEXT).filter(
    lambda text: not _is_finite_float(text))
BOOLEANS = {"true", "1", "yes", "false", "0", "no"}


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _is_finite_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def bad_values(field: dataclasses.Field) -> st.SearchStrategy:
    """Values of a Config field that must be refused, as command-line text."""
    name, kind = field.name, field.type
    if name in CONFIG_CHOICES:
        return TEXT.filter(lambda text: text not in CONFIG_CHOICES[name])
    if kind is bool:
        return TEXT.filter(lambda text: text.lower() not in BOOLEANS)
    if kind in (int, float):
        below = st.integers(max_value=0 if name in CONFIG_POSITIVE else -1).map(str)
        floats = st.floats(max_value=-1e-9 if name in CONFIG_AT_LEAST_ZERO else 0.0).map(repr)
        above = {"seed": st.integers(min_value=2**64).map(str), "augment": st.floats(2.0001, 1e9).map(repr)}
        wrong = NON_INTEGERS if kind is int else NON_NUMBERS
        return st.one_of(below, wrong, *([floats] if kind is float else []), *([above[name]] if name in above else []))
    if name == "method":
        return TEXT.filter(lambda text: text not in __import__("metalab.methods.registry").methods.registry.METHODS)
    if name == "device":
        return TEXT.filter(lambda text: text != "cpu" and not text.startswith("cuda"))
    if name == "embedding_from":
        return st.just("no/such/checkpoint.pt")
    return st.just("FILE/run")  # out_dir: a folder under a file


def files_in(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".metalab.lock")


@pytest.mark.parametrize("field", dataclasses.fields(Config), ids=lambda f: f.name)
@settings(FUZZ, max_examples=8)
@given(data=st.data())
def test_every_config_field_refuses_bad_values_in_one_line(tmp_path_factory, field, data):
    name, value = field.name, data.draw(bad_values(field), label="value")
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "FILE").write_text("x")
    value = value.replace("FILE", str(folder / "FILE"))
    out = ["--out-dir", str(folder / "run")] if name != "out_dir" else []
    code, lines = cli("train", "--preset", "sinusoid-maml", "--threads", "1", "--steps", "2", *out,
                      f"--{name.replace('_', '-')}={value}")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("metalab: error: "), (name, value, code, lines)
    assert files_in(folder) == ["FILE"], (name, value)


# ---- checkpoints -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    loop.train(SINUSOID, folder)
    return folder


def _tensors():
    return hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=2, max_side=3)).map(torch.from_numpy)


PLAIN = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, _tensors()),
                     lambda children: st.one_of(st.lists(children, max_size=3),
                                                st.dictionaries(TEXT, children, max_size=3)), max_leaves=8)


@FUZZ
@given(kind=st.sampled_from(["truncated", "random"]), data=st.data())
def test_damaged_checkpoints_are_one_line_errors(run, tmp_path_factory, kind, data):
    original = (run / "last.pt").read_bytes()
    if kind == "truncated":
        payload = original[:data.draw(st.integers(0, len(original) - 1))]
    else:
        payload = data.draw(st.binary(max_size=2000))
    folder = tmp_path_factory.mktemp("ckpt")
    (folder / "last.pt").write_bytes(payload)
    for argv in (["eval", folder / "last.pt", "--episodes", "2"], ["finetune", "--init", f"maml:{folder / 'last.pt'}"],
                 ["train", "--preset", "sinusoid-maml", "--resume", "--out-dir", folder]):
        code, lines = cli(*argv)
        assert code == 2 and len(lines) == 1 and lines[0].startswith("metalab: error: "), (argv[0], lines)
    assert (folder / "last.pt").read_bytes() == payload and files_in(folder) == ["last.pt"]


@FUZZ
@given(content=PLAIN)
def test_pickles_of_plain_data_that_are_not_checkpoints_are_one_line_errors(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("plain")
    torch.save(content, folder / "x.pt")
    code, lines = cli("eval", folder / "x.pt", "--episodes", "2")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("metalab: error: "), lines


OTHER_TYPES = ["text", 7, 2.5, None, [1, 2], {"a": 1}, torch.zeros(2, 3), True]


def _family(value):
    return {bool: bool, int: (int, float), float: (int, float)}.get(type(value), type(value))


@FUZZ
@given(data=st.data())
def test_a_checkpoint_with_a_field_of_another_type_or_shape_is_refused_on_resume(run, tmp_path_factory, data):
    state = checkpoint.load(run / "last.pt")
    where = data.draw(st.sampled_from(
        [(k,) for k in state if k != "best"] + [("config", k) for k in state["config"]]
        + [("meta", "theta", k) for k in state["meta"]["theta"]]), label="field")
    parent = state
    for key in where[:-1]:
        parent = parent[key]
    old = parent[where[-1]]
    new = data.draw(st.sampled_from([v for v in OTHER_TYPES if not isinstance(v, _family(old))]
                                    + ([torch.zeros(*old.shape, 2)] if isinstance(old, torch.Tensor) else [])))
    if where[0] == "config" and new is None or where == ("config", "out_dir"):
        return  # out_dir is the folder's own setting; None is where a checkpoint would lack the field
    parent[where[-1]] = new
    folder = tmp_path_factory.mktemp("resume")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    (folder / "last.pt").write_bytes(buffer.getvalue())
    code, lines = cli("train", "--preset", "sinusoid-maml", "--steps", "6", "--val-every", "3", "--checkpoint-every",
                      "3", "--log-every", "1", "--val-episodes", "4", "--meta-batch-size", "2", "--hidden", "8",
                      "--threads", "1", "--resume", "--out-dir", folder)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("metalab: error: "), (where, new, lines)
    assert (folder / "last.pt").read_bytes() == buffer.getvalue() and files_in(folder) == ["last.pt"]


# ---- archives ----------------------------------------------------------------------------------------------

@settings(FUZZ, max_examples=8)
@given(kind=st.sampled_from(["truncated", "random"]), data=st.data())
def test_damaged_archives_are_one_line_errors(omniglot_dir, tmp_path_factory, kind, data):
    real = (omniglot_dir / "images_background_small1.zip").read_bytes()
    folder = tmp_path_factory.mktemp("archives")
    payload = (real[:data.draw(st.integers(0, len(real) - 1))] if kind == "truncated"
               else data.draw(st.binary(max_size=5000)))
    (folder / "images_background_small1.zip").write_bytes(payload)
    (folder / "images_background_small2.zip").symlink_to(omniglot_dir / "images_background_small2.zip")
    code, lines = cli("data", "info", "--data-dir", folder, "--no-download")
    assert code == 2 and len(lines) == 1 and lines[0].startswith("metalab: error: "), lines


# ---- score files -------------------------------------------------------------------------------------------

DTYPES = st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex64, "U3"])


def _valid_against(scores, episodes: int) -> bool:
    """The rules `metalab compare` states: numbers, [episodes] or [rows, episodes], finite last row."""
    return (scores.dtype.kind in "fiub" and scores.ndim in (1, 2) and scores.size > 0
            and np.atleast_2d(scores).shape[1] == episodes and bool(np.all(np.isfinite(np.atleast_2d(scores)[-1]))))


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["array", "truncated", "random"]))
def test_score_files_are_compared_or_refused_in_one_line(tmp_path_factory, data, kind):
    folder = tmp_path_factory.mktemp("scores")
    good = np.linspace(0, 1, 12).reshape(3, 4)
    np.save(folder / "good.npy", good)
    path = folder / "other.npy"
    valid = False
    if kind == "array":
        scores = data.draw(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
        np.save(path, scores)
        valid = _valid_against(scores, 4)
    elif kind == "truncated":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:data.draw(st.integers(0, path.stat().st_size - 1))])
    else:
        path.write_bytes(data.draw(st.binary(max_size=300)))
    code, lines = cli("compare", folder / "good.npy", path)
    if valid:
        assert code == 0, lines
    else:
        assert code == 2 and len(lines) == 1 and lines[0].startswith("metalab: error: "), lines
