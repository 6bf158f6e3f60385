"""`--compile true|aot`: each chunk's meta-gradient as one compiled program, against the eager meta-step."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from test_optimization import tiny_problem

from metalab.config import Config, preset
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods import aot, batching, registry
from metalab.methods.learner import Learner, cross_entropy, mse
from metalab.methods.optimization import GradientMethod, InnerLoop
from metalab.models.networks import mlp


def sinusoid_like_problem(tasks=4):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def points(n):
        return torch.rand(tasks, n, 1, generator=g, dtype=torch.float64) * 10 - 5

    support_x, query_x = points(5), points(7)
    return mlp(hidden=8).double(), Episode(support_x, torch.sin(support_x), query_x, torch.sin(query_x))


def meta_step(method: GradientMethod, episode: Episode) -> tuple[float, float, list]:
    meta = method.init_meta()
    loss, score = method.meta_loss(meta, episode, 0)
    loss.backward()
    return loss.item(), score.item(), [p.grad for ps in meta.values() for p in ps.values()]


@pytest.fixture(scope="module")
def program_cache(tmp_path_factory) -> Path:
    """One folder of compiled programs for this module's tests: a later test finds an earlier one's programs."""
    return tmp_path_factory.mktemp("cache")


def build_count(mode: str, monkeypatch) -> Callable[[], int]:
    """The number of programs compiled by torch.compile ("true") or built by a child ("aot") from now on."""
    if mode == "true":
        from torch._dynamo.utils import counters

        before = counters["stats"]["unique_graphs"]
        return lambda: counters["stats"]["unique_graphs"] - before
    builds = []
    build = aot._compile_in_child
    monkeypatch.setattr(aot, "_compile_in_child", lambda *args: builds.append(args) or build(*args))
    return lambda: len(builds)


@pytest.mark.parametrize("mode", ["true", "aot"])
@pytest.mark.parametrize("rule, network, task_batching, chunk", [
    ("metasgd", "mlp", "loop", 0),
    pytest.param("maml", "conv4", "vmap", 1, marks=pytest.mark.slow),  # three chunks, one program
])
def test_a_compiled_meta_step_gives_the_eager_meta_gradient_and_compiles_once(mode, rule, network, task_batching,
                                                                               chunk, program_cache, monkeypatch):
    monkeypatch.setenv("METALAB_CACHE", str(program_cache))
    if network == "mlp":
        model, episode = sinusoid_like_problem()
        learner = Learner(model, mse)
    else:
        model, episode = tiny_problem()
        learner = Learner(model, cross_entropy)
    methods = {compiled: GradientMethod(learner, InnerLoop(rule, 0.3), train_steps=2, batching=task_batching,
                                        chunk=chunk, compiled=compiled) for compiled in ("false", mode)}
    eager_loss, eager_score, eager_grads = meta_step(methods["false"], episode)
    builds = build_count(mode, monkeypatch)
    loss, score, grads = meta_step(methods[mode], episode)
    assert loss == pytest.approx(eager_loss, rel=1e-12) and score == pytest.approx(eager_score, rel=1e-12)
    assert len(grads) == len(eager_grads) > 0
    for got, want in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert builds() == 1
    meta_step(methods[mode], episode)  # a new meta-step, new meta-parameters: the program is reused
    assert builds() == 1


def test_an_aot_program_is_loaded_from_disk_in_a_new_process_that_never_imports_the_compiler(program_cache,
                                                                                             monkeypatch):
    """It neither rebuilds the program nor imports the compiler, and removes what a build killed part-way left."""
    monkeypatch.setenv("METALAB_CACHE", str(program_cache))
    monkeypatch.setattr(batching, "_PROGRAMS", {})  # this process asks a child for the program's path too
    paths, find = [], aot._compile_in_child
    monkeypatch.setattr(aot, "_compile_in_child", lambda *args: paths.append(find(*args)) or paths[-1])
    method = GradientMethod(Learner(sinusoid_like_problem()[0], mse), InnerLoop("metasgd", 0.3), train_steps=2,
                            compiled="aot")
    meta_step(method, sinusoid_like_problem()[1])  # the program exists (it may come from the test above)
    programs = {path: path.stat().st_mtime_ns for path in (program_cache / "programs").glob("*.pt2")}
    torn = paths[0].with_name(f".{paths[0].stem}.999999.pt2")  # what a build killed part-way leaves
    torn.write_bytes(b"torn")
    script = ("import sys; from test_compile import *\n"
              "model, episode = sinusoid_like_problem()\n"
              "method = GradientMethod(Learner(model, mse), InnerLoop('metasgd', 0.3), train_steps=2, compiled='aot')\n"
              "eager = GradientMethod(Learner(model, mse), InnerLoop('metasgd', 0.3), train_steps=2)\n"
              "assert meta_step(method, episode)[0] == meta_step(eager, episode)[0]\n"
              "print(sorted(name for name in sys.modules if name.startswith(('torch._dynamo', 'torch._inductor'))))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parent,
                          env={**os.environ, "METALAB_CACHE": str(program_cache)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert {path: path.stat().st_mtime_ns for path in (program_cache / "programs").glob("*.pt2")} == programs
    assert not torn.exists()


def test_a_failed_aot_build_is_one_error_with_the_fix(program_cache, monkeypatch):
    monkeypatch.setenv("METALAB_CACHE", str(program_cache))
    monkeypatch.setattr(aot, "_trace_and_compile", lambda *args: 1 / 0)
    monkeypatch.setattr(batching, "_PROGRAMS", {})
    method = GradientMethod(Learner(sinusoid_like_problem()[0], mse), InnerLoop("metasgd", 0.3), compiled="aot")
    with pytest.raises(MetalabError, match=r"could not compile the meta-gradient \(ZeroDivisionError: division by "
                                           r"zero\); use --compile true or false"):
        meta_step(method, sinusoid_like_problem()[1])


@pytest.mark.parametrize("mode", ["true", "aot"])
def test_the_config_field_reaches_the_method(mode):
    config = preset("sinusoid-maml").replace(compile=mode)
    method = registry.make_method(config, Learner(mlp(hidden=8), mse))
    assert method.compiled == mode


@pytest.mark.parametrize("stored, mode", [(True, "true"), (False, "false")])
def test_a_checkpoint_config_from_before_aot_still_loads(stored, mode):
    assert Config(compile=stored).compile == mode


def test_aot_on_a_gpu_is_refused_with_the_fix():
    config = preset("sinusoid-maml").replace(compile="aot", device="cuda")
    with pytest.raises(MetalabError, match="not for cuda: use --compile true"):
        registry.make_method(config, Learner(mlp(hidden=8), mse))


@pytest.mark.parametrize("changes, fragment", [
    ({"method": "protonet"}, "protonet has its own: use --compile false"),
    ({"method": "imaml"}, "imaml has its own: use --compile false"),
])
def test_compile_where_it_does_not_apply_is_refused_with_the_fix(changes, fragment):
    config = preset("omniglot-5w1s-maml").replace(compile="true", **changes)
    with pytest.raises(MetalabError, match=fragment):
        registry.make_method(config, Learner(torch.nn.Linear(2, 2), cross_entropy))


def test_compile_without_a_cpp_compiler_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(registry.shutil, "which", lambda name: None)
    with pytest.raises(MetalabError, match="needs a C.. compiler .* install one or use --compile false"):
        registry.make_method(preset("sinusoid-maml").replace(compile="aot"), Learner(mlp(hidden=8), mse))
