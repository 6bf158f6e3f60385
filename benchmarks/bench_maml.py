"""Second-order MAML meta-step: metalab against learn2learn and higher, on the same weights and tasks.

Run on demand (pytest does not collect it):

    python benchmarks/bench_maml.py                   # 10 interleaved rounds, 2 torch threads
    python benchmarks/bench_maml.py --quick           # 2 rounds, 1 timed step each: does it all work?
    python benchmarks/bench_maml.py --setup-only      # only build the throwaway environment

The problem: Conv4 (3x3 conv, batch norm, ReLU, 2x2 max-pool; 64 channels), a meta-batch of 32 random
5-way 1-shot 15-query tasks of 1x28x28 inputs, inner learning rate 0.4, S inner steps (--steps-list,
default 1 and 5), the true second-order meta-gradient. Three implementations compute it (metalab's Conv4
max-pools before its ReLU, the same function; the libraries run the usual order, see textbook_order):

  metalab      GradientMethod(..., batching="loop").meta_loss(meta, episode, 0).backward()  (as training runs it)
  learn2learn  l2l.algorithms.MAML(model, lr, first_order=False): clone(), adapt() S times
  higher       higher.innerloop_ctx(model, SGD, copy_initial_weights=False, track_higher_grads=True)

All three go through the tasks one at a time and call backward on each task's query loss (scaled by
1/tasks), as each library's own MAML example does: a task's graph is freed before the next is built.
A meta-step is zero_grad + the meta-gradient of the whole batch + one Adam step.

What it does, in order:
 1. Builds (once) a throwaway virtual environment under --cache-dir with torch 2.13.0, learn2learn
    0.2.0 and higher 0.2.1; metalab itself is put on the children's PYTHONPATH, not installed there.
 2. Checks, in float64 on a smaller Conv4, that the three meta-gradients agree (relative difference
    per tensor <= --check-rtol); stops if they do not, since the timings would then compare different
    computations.
 3. Times the three INTERLEAVED (metalab, learn2learn, higher, metalab, ...) for --repeats rounds.
    Every measurement is a fresh child process, which reports its wall-clock and CPU time per meta-step
    and its own peak resident set size (getrusage ru_maxrss), so memory is per implementation; every
    child uses the same interpreter, torch build, thread count and allocator settings (--malloc). The
    first round also saves each one's float32 meta-gradient of the timed problem, compared for
    information.
 4. Measures metalab's peak memory for S in --memory-steps (one child each), with a line fitted to it,
    under an allocator setting that makes peak RSS follow peak live memory (--memory-malloc).

Writes benchmarks/results/maml.json (git-ignored) and prints a table of medians and ratios. Timings
are only meaningful on an otherwise idle machine: the load average is recorded at start and end.
"""

import argparse
import fcntl
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
IMPLS = ("metalab", "learn2learn", "higher")
TORCH, LEARN2LEARN, HIGHER = "2.13.0", "0.2.0", "0.2.1"
# Bump when the environment recipe below changes, so that an existing environment is rebuilt.
RECIPE = {"recipe": 1, "torch": TORCH, "learn2learn": LEARN2LEARN, "higher": HIGHER}
# metalab's runtime dependencies, the modules learn2learn imports at `import learn2learn`, and the tools
# to rebuild learn2learn's Cython extensions. `wheel` lets pip build without build isolation.
ENV_PACKAGES = ["numpy", "pillow", "platformdirs", "filelock", "tqdm", "scipy", "requests", "gym",
                "cython<3", "wheel"]
L2L_EXTENSIONS = ("meta_dataset", "task_dataset", "transforms")  # learn2learn/data/*.pyx
MALLOC_MODES = ("metalab", "mmap", "default")
OTHER_LOAD_LIMIT = 0.1  # cores kept busy by other processes during a timed child, beyond which we warn


# ----------------------------------------------------------------------------------------------------
# The throwaway environment
# ----------------------------------------------------------------------------------------------------

TORCHVISION_STUB = '''"""Stand-in for torchvision, written by metalab's benchmarks/bench_maml.py. Not the real one.

`import learn2learn` imports torchvision (for its vision datasets and transforms), though its MAML
never uses it, and no torchvision release installs beside torch 2.13.0 here. Any `torchvision.*`
module can be imported and any attribute exists, so those imports succeed; a lower-case name is a
submodule, any other name a class that can be subclassed but not instantiated, so no code can
silently run on the stand-in.
"""

import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+stub"


class Unavailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("torchvision is only a stand-in in the MAML benchmark's environment")


class StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name[:1].islower():
            value = importlib.import_module(f"{self.__name__}.{name}")
        else:
            value = type(name, (Unavailable,), {"__module__": self.__name__})
        setattr(self, name, value)  # the same object on every access
        return value


class StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return StubModule(spec.name)

    def exec_module(self, module):
        pass


sys.modules[__name__].__class__ = StubModule
sys.meta_path.insert(0, StubFinder())
'''


class Env:
    """Paths of the throwaway environment under the cache folder."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.venv = cache / "venv"
        self.python = self.venv / "bin" / "python"
        self.stubs = cache / "stubs"
        self.marker = self.venv / ".metalab-bench-ready"
        self.log = cache / "setup.log"

    def child_environ(self, threads: int) -> dict:
        env = dict(os.environ)
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
            env.pop(name, None)
        # The stand-in torchvision and metalab's own source; nothing from the user's site-packages.
        env["PYTHONPATH"] = os.pathsep.join([str(self.stubs), str(SRC)])
        env["PYTHONNOUSERSITE"] = "1"
        # torch.set_num_threads is called too; these keep OpenMP/MKL from sizing pools to all cores first.
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        return env


def ensure_env(env: Env) -> dict:
    """Build the throwaway environment unless a complete one with the same recipe exists; return what
    its interpreter reports about itself (versions, and where torchvision comes from)."""
    env.cache.mkdir(parents=True, exist_ok=True)
    with open(env.cache / "setup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once: the second waits, then finds it built
        write_stub(env)  # every time: cheap, and an edited stand-in then takes effect without a rebuild
        if env.marker.exists() and json.loads(env.marker.read_text()) == RECIPE:
            return verify_env(env)
        return build_env(env)


def build_env(env: Env) -> dict:
    """Each step is safe to repeat (pip skips what is installed), so an interrupted build resumes."""
    print(f"building the benchmark's environment in {env.venv} (once; log: {env.log})", flush=True)
    env.log.write_text("")
    if not env.python.exists():
        # From a venv, `-m venv` builds on the base interpreter: a plain venv, no system site-packages.
        _run([sys.executable, "-m", "venv", str(env.venv)], env, "create the virtual environment")
    pip = [str(env.python), "-m", "pip", "--disable-pip-version-check"]
    # torch first and alone, so that nothing later can bring another build; the constraint then pins it
    # for every later install. torchvision is never installed: see TORCHVISION_STUB.
    _run(pip + ["install", f"torch=={TORCH}"], env, f"install torch {TORCH}")
    constraints = env.cache / "constraints.txt"
    constraints.write_text(f"torch=={TORCH}\n")
    _run(pip + ["install", "-c", str(constraints), *ENV_PACKAGES], env, "install " + ", ".join(ENV_PACKAGES))
    if not _installed(env, "learn2learn"):
        install_learn2learn(env, pip)
    _run(pip + ["install", "--no-deps", f"higher=={HIGHER}"], env, f"install higher {HIGHER}")
    info = verify_env(env)
    env.marker.write_text(json.dumps(RECIPE))
    return info


def write_stub(env: Env) -> None:
    stub = env.stubs / "torchvision" / "__init__.py"
    stub.parent.mkdir(parents=True, exist_ok=True)
    if not stub.exists() or stub.read_text() != TORCHVISION_STUB:
        stub.write_text(TORCHVISION_STUB)


def install_learn2learn(env: Env, pip: list[str]) -> None:
    """learn2learn 0.2.0 is published as source only, and the C files it ships were generated by an
    old Cython that does not compile on Python 3.11 (longintrepr.h moved); regenerate them from the
    .pyx sources with the Cython 0.29 installed above, then build without isolation so that pip uses
    that Cython and torch instead of fetching others."""
    downloads = env.cache / "downloads"
    downloads.mkdir(exist_ok=True)
    # --no-binary for learn2learn only: :all: would also build its build requirements from source.
    _run(pip + ["download", f"learn2learn=={LEARN2LEARN}", "--no-deps", "--no-binary", "learn2learn",
                "--no-build-isolation", "-d", str(downloads)], env, f"download learn2learn {LEARN2LEARN}")
    archive = downloads / f"learn2learn-{LEARN2LEARN}.tar.gz"
    build = env.cache / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(build, filter="data")
    source = build / f"learn2learn-{LEARN2LEARN}"
    pyx = [source / "learn2learn" / "data" / f"{name}.pyx" for name in L2L_EXTENSIONS]
    for path in pyx:
        path.with_suffix(".c").unlink(missing_ok=True)
    _run([str(env.venv / "bin" / "cython"), "-3", *map(str, pyx)], env, "regenerate learn2learn's C files")
    _run(pip + ["install", "--no-deps", "--no-build-isolation", str(source)], env, f"build learn2learn {LEARN2LEARN}")


def _installed(env: Env, distribution: str) -> bool:
    probe = f"import importlib.metadata as m; m.version({distribution!r})"
    return subprocess.run([str(env.python), "-c", probe], capture_output=True).returncode == 0


def _run(command: list[str], env: Env, what: str) -> None:
    print(f"  {what} ...", flush=True)
    with open(env.log, "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=env.cache)
    if done.returncode != 0:
        tail = env.log.read_text().splitlines()[-30:]
        raise SystemExit(f"bench_maml: could not {what} (exit {done.returncode}); end of {env.log}:\n"
                         + "\n".join(tail))


def verify_env(env: Env) -> dict:
    """Import everything the children import, in a child, and check it is what it should be."""
    probe = (
        "import json, sys, importlib.metadata as m, torch, numpy, learn2learn, higher, torchvision\n"
        "import metalab.models.networks\n"
        "print(json.dumps({'python': sys.version.split()[0], 'torch': torch.__version__,\n"
        "    'numpy': numpy.__version__, 'learn2learn': learn2learn.__version__,\n"
        "    'higher': m.version('higher'), 'torchvision': torchvision.__file__,\n"
        "    'metalab': metalab.models.networks.__file__}))\n")
    done = subprocess.run([str(env.python), "-c", probe], capture_output=True, text=True,
                          env=env.child_environ(1), cwd=env.cache)
    if done.returncode != 0:
        raise SystemExit(f"bench_maml: the environment in {env.venv} does not import what it needs "
                         f"(delete {env.cache} to rebuild it):\n{done.stderr[-3000:]}")
    info = json.loads(done.stdout.strip().splitlines()[-1])
    problems = []
    if info["torch"].split("+")[0] != TORCH:
        problems.append(f"torch is {info['torch']}, not {TORCH}")
    if not info["torchvision"].startswith(str(env.stubs)):
        problems.append(f"torchvision comes from {info['torchvision']}, not the stand-in")
    if not info["metalab"].startswith(str(SRC)):
        problems.append(f"metalab comes from {info['metalab']}, not {SRC}")
    if problems:
        raise SystemExit("bench_maml: " + "; ".join(problems) + f" (delete {env.cache} to rebuild)")
    return info


# ----------------------------------------------------------------------------------------------------
# Children: each runs one implementation in the throwaway environment and prints one JSON line
# ----------------------------------------------------------------------------------------------------

def configure_malloc(mode: str) -> None:
    """glibc's allocator settings, the same for every implementation: they change both speed and peak RSS.

    "metalab"  those `metalab train` applies (metalab.runtime.keep_freed_memory, copied so that the
               other children need not import metalab's training code): freed blocks are kept for reuse.
    "mmap"     every block of 64 KiB or more is mapped on its own and unmapped when freed, so that peak
               RSS follows the peak of live tensors instead of the allocator's reuse (slower: page faults).
    "default"  glibc's own (its mmap threshold grows as large blocks are freed).
    """
    import ctypes

    if mode == "default":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    if mode == "metalab":
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 1 << 30)
    elif mode == "mmap":  # a fixed threshold also turns glibc's dynamic one off
        libc.mallopt(m_mmap_threshold, 64 << 10)
        libc.mallopt(m_trim_threshold, 128 << 10)
    else:
        raise ValueError(f"unknown malloc mode {mode!r}")


def reset_peak_rss() -> bool:
    """Start this process's peak RSS afresh (Linux: /proc/self/clear_refs); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def vm_hwm_mib() -> float:
    """This process's peak RSS since the last reset_peak_rss (VmHWM), MiB."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def peak_rss_mib(who: str = "self") -> float:
    """This process's peak RSS ("self"), or its largest finished child's ("children"), MiB."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF if who == "self" else resource.RUSAGE_CHILDREN)
    return usage.ru_maxrss / 1024  # KiB on Linux


def child_prepare(spec: dict) -> dict:
    """The shared inputs: Conv4's initial weights and a batch of random tasks, from one seed."""
    import torch

    from metalab.models.networks import conv4

    c = spec["config"]
    torch.manual_seed(c["seed"])
    model = conv4(c["ways"], hidden=c["hidden"], pooling=c["pooling"], image_size=28)
    generator = torch.Generator().manual_seed(c["seed"] + 1)
    b, n, k, q = c["tasks"], c["ways"], c["shots"], c["queries"]

    def labels(per_class):  # [b, n * per_class]: class 0's examples first, then class 1's, ...
        return torch.arange(n).repeat_interleave(per_class).expand(b, -1).contiguous()

    episode = (torch.randn(b, n * k, 1, 28, 28, generator=generator), labels(k),
               torch.randn(b, n * q, 1, 28, 28, generator=generator), labels(q))
    torch.save({"state": model.state_dict(), "episode": episode, "config": c}, spec["path"])
    return {"parameters": sum(p.numel() for p in model.parameters())}


def build_meta_step(impl: str, model, episode, steps: int, inner_lr: float, batching: str = "loop",
                    chunk: int = 0, compiled: str = "false"):
    """(compute, named_parameters): compute() adds d(mean query loss)/d(theta) to the .grad of the
    parameters and returns the mean query loss; named_parameters() are the meta-parameters theta.
    `batching` and `chunk` are metalab's way of batching the tasks (methods/batching.py); `compiled` its --compile."""
    import torch
    import torch.nn.functional as F

    support_x, support_y, query_x, query_y = episode
    tasks = support_x.shape[0]

    if impl == "metalab":
        from bench_batching import maml

        from metalab.data.episode import Episode

        method = maml(model, steps, inner_lr, batching, chunk, compiled)
        meta = method.init_meta()  # copies the model's (loaded) weights into meta["theta"]
        batch = Episode(*episode)

        def compute():
            loss, _ = method.meta_loss(meta, batch, 0)
            loss.backward()
            return loss.item()

        return compute, lambda: list(meta["theta"].items())

    if impl == "learn2learn":
        import learn2learn as l2l

        maml = l2l.algorithms.MAML(model, lr=inner_lr, first_order=False)

        def compute():
            total = 0.0
            for i in range(tasks):
                learner = maml.clone()
                for _ in range(steps):
                    learner.adapt(F.cross_entropy(learner(support_x[i]), support_y[i]))
                loss = F.cross_entropy(learner(query_x[i]), query_y[i])
                (loss / tasks).backward()
                total += loss.item()
            return total / tasks

        return compute, lambda: list(maml.module.named_parameters())

    if impl == "higher":
        import higher

        inner_optimizer = torch.optim.SGD(model.parameters(), lr=inner_lr)

        def compute():
            total = 0.0
            for i in range(tasks):
                with higher.innerloop_ctx(model, inner_optimizer, copy_initial_weights=False,
                                          track_higher_grads=True) as (fmodel, diffopt):
                    for _ in range(steps):
                        diffopt.step(F.cross_entropy(fmodel(support_x[i]), support_y[i]))
                    loss = F.cross_entropy(fmodel(query_x[i]), query_y[i])
                    (loss / tasks).backward()
                total += loss.item()
            return total / tasks

        return compute, lambda: list(model.named_parameters())

    raise ValueError(f"unknown implementation {impl!r}")


def textbook_order(model):
    """The Conv4 as a user of learn2learn or higher writes it: ReLU, then max-pool. metalab's conv4 pools
    first (the same function, cheaper); the libraries get the usual order, so that the timing compares
    what each user would run. Parameter names and values are unchanged."""
    from torch import nn

    layers = list(model)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.MaxPool2d) and isinstance(layers[i + 1], nn.ReLU):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return nn.Sequential(*layers)


def load_problem(spec: dict):
    import torch

    from metalab.models.networks import conv4

    dtype = getattr(torch, spec["dtype"])
    inputs = torch.load(spec["path"])
    c = inputs["config"]
    model = conv4(c["ways"], hidden=c["hidden"], pooling=c["pooling"], image_size=28, norm="batch")
    if spec["impl"] != "metalab":
        model = textbook_order(model)
    model.load_state_dict(inputs["state"])
    model.to(dtype).train()
    x_s, y_s, x_q, y_q = inputs["episode"]
    return model, (x_s.to(dtype), y_s, x_q.to(dtype), y_q), c


def child_gradient(spec: dict) -> dict:
    """One meta-gradient, saved for comparison (no optimizer step)."""
    import torch

    model, episode, c = load_problem(spec)
    compute, named = build_meta_step(spec["impl"], model, episode, spec["steps"], c["inner_lr"], c["metalab_batching"],
                                     c.get("metalab_chunk", 0), compile_mode(c))
    loss = compute()
    torch.save({name: p.grad.detach().clone() for name, p in named()}, spec["out"])
    return {"loss": loss}


def child_time(spec: dict) -> dict:
    """--warmup then --iters meta-steps (zero_grad, meta-gradient, Adam), each timed in wall-clock and
    in CPU time of the process (all threads; on a busy machine it suffers much less than wall-clock
    from waiting for a core); peak RSS. With "grad_out", the first step's meta-gradient is saved too,
    after its timing."""
    import torch

    model, episode, c = load_problem(spec)
    compute, named = build_meta_step(spec["impl"], model, episode, spec["steps"], c["inner_lr"], c["metalab_batching"],
                                     c.get("metalab_chunk", 0), compile_mode(c))
    if spec["impl"] == "metalab":  # its own Adam, as its training runs (torch.optim's would import the compiler)
        from metalab.training.optimizer import Adam

        optimizer = Adam([p for _, p in named()])
        optimizer_step = partial(optimizer.step, 1e-3)
    else:  # torch.optim.Adam, as the libraries' MAML examples
        optimizer = torch.optim.Adam([p for _, p in named()], lr=1e-3)
        optimizer_step = optimizer.step
    rss_setup = peak_rss_mib()  # imports, inputs and model: what the meta-steps are measured above
    times, cpu_times, losses, rss_timed = [], [], [], None
    for step in range(spec["warmup"] + spec["iters"]):
        if step == spec["warmup"]:
            rss_timed = reset_peak_rss()
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        losses.append(compute())
        optimizer_step()  # leaves .grad as it is
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
        if step == 0 and spec.get("grad_out"):
            torch.save({name: p.grad.detach().clone() for name, p in named()}, spec["grad_out"])
    warmup = spec["warmup"]
    return {"times_s": times[warmup:], "cpu_s": cpu_times[warmup:], "warmup_s": times[:warmup],
            "first_loss": losses[0], "rss_setup_mib": rss_setup, "rss_peak_mib": peak_rss_mib(),
            # --compile aot compiles in a forked child: the largest child's peak RSS (0: none ran)
            "rss_children_peak_mib": peak_rss_mib("children"),
            "rss_timed_peak_mib": vm_hwm_mib() if rss_timed else None,
            "torch_threads": torch.get_num_threads()}


def child_compare(spec: dict) -> dict:
    """Relative differences of the saved meta-gradients, per pair of implementations.

    Per tensor: max|a - b| / max(max|a|, max|b|, floor). The floor, a 1e-8 part of the largest entry of
    the whole gradient, is there for the convolution biases: batch norm right after them cancels any
    constant shift, so their meta-gradient is zero in exact arithmetic and only rounding noise in
    practice, which compared with itself would read as an O(1) relative difference."""
    import torch

    grads = {impl: torch.load(path) for impl, path in spec["grads"].items()}
    pairs = {}
    names = list(grads)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if grads[a].keys() != grads[b].keys():
                raise ValueError(f"{a} and {b} name their parameters differently")
            floor = 1e-8 * max(float(g.abs().max()) for g in [*grads[a].values(), *grads[b].values()])
            per_tensor = {}
            for name in grads[a]:
                ga, gb = grads[a][name], grads[b][name]
                scale = max(float(ga.abs().max()), float(gb.abs().max()), floor)
                per_tensor[name] = float((ga - gb).abs().max()) / scale if scale > 0 else 0.0
            flat_a = torch.cat([g.reshape(-1) for g in grads[a].values()])
            flat_b = torch.cat([g.reshape(-1) for g in grads[b].values()])
            worst = max(per_tensor, key=per_tensor.get)
            pairs[f"{a} vs {b}"] = {
                "max_relative": per_tensor[worst], "worst_tensor": worst,
                "norm_relative": float((flat_a - flat_b).norm() / flat_b.norm()),
                "bitwise_equal": all(torch.equal(grads[a][n], grads[b][n]) for n in grads[a]),
            }
    norms = {impl: float(torch.cat([g.reshape(-1) for g in gs.values()]).norm()) for impl, gs in grads.items()}
    return {"pairs": pairs, "gradient_norms": norms}


def child_main(spec: dict) -> None:
    configure_malloc(spec.get("malloc", "default"))
    import torch

    torch.set_num_threads(spec.get("threads", 1))
    run = {"prepare": child_prepare, "gradient": child_gradient, "time": child_time,
           "compare": child_compare}[spec["mode"]]
    print(json.dumps(run(spec)))


# ----------------------------------------------------------------------------------------------------
# The parent: no torch needed here
# ----------------------------------------------------------------------------------------------------

def run_child(env: Env, spec: dict, threads: int) -> dict:
    """Run one child to completion; its JSON answer, with "other_load" added: how many cores other
    processes kept busy on average meanwhile (None where /proc/stat is missing)."""
    command = [str(env.python), str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    busy, own, start = machine_busy_s(), own_cpu_s(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env.child_environ(threads), cwd=env.cache)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        what = spec["mode"] + (f" {spec['impl']}" if "impl" in spec else "")
        raise SystemExit(f"bench_maml: the {what} child failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    busy_after = machine_busy_s()
    others = None if busy is None or busy_after is None else busy_after - busy - (own_cpu_s() - own)
    result["other_load"] = max(others, 0.0) / wall if others is not None and wall > 0 else None
    return result


def machine_busy_s() -> float | None:
    """CPU seconds all cores have spent busy since boot (Linux). Unlike the load average, the difference
    of two readings minus this process's and its children's CPU time tells what *other* processes took
    while a child ran, without counting the benchmark itself."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(t) for t in stat.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def parse_list(text: str, allow_empty: bool = False) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if (not values and not allow_empty) or (values and min(values) < 1):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-list", type=parse_list, default=[1, 5], help="inner steps S to time (default 1,5)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 10; 2 with --quick)")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed meta-steps per child, after --warmup (default 2; 1 with --quick)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed meta-steps first in every child")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads in every child (default 2)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 timed step: checks that it all works")
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help=f"which to time, in this order; ratios are against the first (default {','.join(IMPLS)})")
    parser.add_argument("--tasks", type=int, default=32, help="meta-batch size")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15, help="queries per class")
    parser.add_argument("--hidden", type=int, default=64, help="Conv4 channels")
    parser.add_argument("--pooling", choices=("max", "stride"), default="max",
                        help="Conv4 with 2x2 max-pooling, or the MAML paper's stride-2 convolutions (the presets')")
    parser.add_argument("--metalab-batching", choices=("loop", "vmap"), default="loop",
                        help="how metalab batches the tasks (the libraries loop, as their MAML examples do)")
    parser.add_argument("--metalab-chunk", type=int, default=0,
                        help="with --metalab-batching vmap: tasks per vmapped chunk (metalab's --task-chunk; 0: all)")
    parser.add_argument("--metalab-compile", choices=("false", "true", "aot"), default="false",
                        help="metalab's --compile: each chunk's meta-gradient compiled by torch.compile (true) or "
                             "ahead of time (aot), in the warm-up step, whose time is reported apart")
    parser.add_argument("--inner-lr", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0, help="weights and tasks (the same for all three)")
    parser.add_argument("--memory-steps", type=lambda text: parse_list(text, allow_empty=True),
                        default=[1, 2, 3, 5, 8, 10],
                        help="S for metalab's peak memory against S (default 1,2,3,5,8,10; empty: skip)")
    parser.add_argument("--memory-tasks", type=int, default=8,
                        help="meta-batch for the memory sweep: with task-by-task backward the peak does not "
                             "depend on it, so a small one saves time (default 8)")
    parser.add_argument("--check-hidden", type=int, default=16, help="Conv4 channels of the float64 check")
    parser.add_argument("--check-tasks", type=int, default=4, help="tasks of the float64 check")
    parser.add_argument("--check-queries", type=int, default=5, help="queries per class of the float64 check")
    parser.add_argument("--check-rtol", type=float, default=1e-6,
                        help="largest allowed max|a-b| / max(|a|,|b|) per gradient tensor in float64")
    parser.add_argument("--skip-check", action="store_true", help="time without the gradient check")
    parser.add_argument("--malloc", choices=MALLOC_MODES, default="metalab",
                        help="glibc allocator settings of every timed child (see configure_malloc): those of "
                             "`metalab train` (default), 'mmap' (peak RSS = peak live memory, slower) or glibc's own")
    parser.add_argument("--memory-malloc", choices=MALLOC_MODES, default="mmap",
                        help="the same for the memory sweep (default 'mmap': with reuse of freed blocks, the "
                             "peak moves by tens of MiB from run to run, more than an inner step adds)")
    parser.add_argument("--cache-dir", default=str(default_cache()), help="where the throwaway environment lives")
    parser.add_argument("--setup-only", action="store_true", help="build (or verify) the environment and stop")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "maml.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 10
    if args.iters is None:
        args.iters = 1 if args.quick else 2
    args.impls = [impl.strip() for impl in args.impls.split(",") if impl.strip()]
    if not set(args.impls) <= set(IMPLS) or not args.impls:
        parser.error(f"--impls takes a comma-separated subset of {','.join(IMPLS)}")
    if min(args.repeats, args.iters, args.threads, args.tasks, args.memory_tasks, args.check_tasks) < 1 \
            or args.warmup < 0:
        parser.error("counts must be positive (--warmup may be 0)")
    return args


def compile_mode(config: dict) -> str:
    """metalab's --compile of a problem config: "false", "true" or "aot" (older reports stored a boolean)."""
    mode = config.get("metalab_compile", "false")
    return {True: "true", False: "false"}.get(mode, mode)


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "metalab-bench"


def problem_config(args, **overrides) -> dict:
    config = {"seed": args.seed, "ways": args.ways, "shots": args.shots, "queries": args.queries,
              "hidden": args.hidden, "pooling": args.pooling == "max", "tasks": args.tasks, "inner_lr": args.inner_lr,
              "metalab_batching": args.metalab_batching, "metalab_chunk": args.metalab_chunk,
              "metalab_compile": args.metalab_compile}
    config.update(overrides)
    return config


def gradient_check(env: Env, args, work: Path) -> dict:
    config = problem_config(args, hidden=args.check_hidden, tasks=args.check_tasks, queries=args.check_queries)
    path = str(work / "check-inputs.pt")
    run_child(env, {"mode": "prepare", "config": config, "path": path}, args.threads)
    results = {"config": config, "dtype": "float64", "rtol": args.check_rtol, "by_steps": {}}
    passed = True
    for steps in args.steps_list:
        losses, grads = {}, {}
        for impl in IMPLS:
            grads[impl] = str(work / f"grad-{impl}-{steps}.pt")
            spec = {"mode": "gradient", "impl": impl, "steps": steps, "dtype": "float64", "path": path,
                    "out": grads[impl], "threads": args.threads, "malloc": args.malloc}
            losses[impl] = run_child(env, spec, args.threads)["loss"]
        compared = run_child(env, {"mode": "compare", "grads": grads}, args.threads)
        pairs = compared["pairs"]
        ok = all(pair["max_relative"] <= args.check_rtol for pair in pairs.values())
        passed &= ok
        results["by_steps"][str(steps)] = {"query_loss": losses, "gradient_norms": compared["gradient_norms"],
                                           "pairs": pairs, "passed": ok}
        print(f"  S={steps}: {describe_pairs(pairs)}" + ("  ok" if ok else f"  FAILED (rtol {args.check_rtol:g})"),
              flush=True)
    results["passed"] = passed
    return results


def time_interleaved(env: Env, args, work: Path) -> tuple[dict, dict]:
    path = str(work / "inputs.pt")
    run_child(env, {"mode": "prepare", "config": problem_config(args), "path": path}, args.threads)
    runs = {str(s): {impl: [] for impl in args.impls} for s in args.steps_list}
    first_grads = {str(s): {} for s in args.steps_list}
    for round_ in range(args.repeats):
        for steps in args.steps_list:
            for impl in args.impls:  # interleaved: a slow spell of the machine hits all of them alike
                spec = {"mode": "time", "impl": impl, "steps": steps, "dtype": "float32", "path": path,
                        "warmup": args.warmup, "iters": args.iters, "threads": args.threads, "malloc": args.malloc}
                if round_ == 0:  # the float32 meta-gradients of the timed problem itself, compared below
                    spec["grad_out"] = first_grads[str(steps)][impl] = str(work / f"grad32-{impl}-{steps}.pt")
                result = run_child(env, spec, args.threads)
                runs[str(steps)][impl].append(result)
                wall, cpu = statistics.mean(result["times_s"]), statistics.mean(result["cpu_s"])
                others = "-" if result["other_load"] is None else f"{result['other_load']:.2f}"
                print(f"  round {round_ + 1}/{args.repeats}  S={steps}  {impl:<11}  {wall:7.3f} s/step "
                      f"({cpu:7.3f} s CPU)  peak {result['rss_peak_mib']:6.0f} MiB  other load {others}", flush=True)
    float32 = {}
    if len(args.impls) > 1:
        for steps, grads in first_grads.items():
            float32[steps] = run_child(env, {"mode": "compare", "grads": grads}, args.threads)
    return runs, float32


def summarize(runs: dict, impls: list[str]) -> dict:
    summary = {}
    for steps, by_impl in runs.items():
        row = {}
        for impl in impls:
            results = by_impl[impl]
            row[impl] = {
                # a child's mean over its timed steps, then the median over children
                "s_per_meta_step": statistics.median(statistics.mean(r["times_s"]) for r in results),
                "cpu_s_per_meta_step": statistics.median(statistics.mean(r["cpu_s"]) for r in results),
                "peak_rss_mib": statistics.median(r["rss_peak_mib"] for r in results),
                "meta_step_rss_mib": statistics.median(r["rss_peak_mib"] - r["rss_setup_mib"] for r in results),
                "setup_rss_mib": statistics.median(r["rss_setup_mib"] for r in results),
                "timed_peak_rss_mib": median_or_none([r.get("rss_timed_peak_mib") for r in results]),
                "children_peak_rss_mib": median_or_none([r.get("rss_children_peak_mib") for r in results]),
                "warmup_s": statistics.median(r["warmup_s"][0] for r in results) if results[0]["warmup_s"] else None,
                "first_loss": results[0]["first_loss"],
                "other_load_max": max((r["other_load"] for r in results if r["other_load"] is not None), default=None),
            }
        base = row[impls[0]]
        for impl in impls:
            for key in ("s_per_meta_step", "cpu_s_per_meta_step", "peak_rss_mib", "meta_step_rss_mib"):
                row[impl][key + "_ratio"] = row[impl][key] / base[key] if base[key] > 0 else None
        summary[steps] = row
    return summary


def memory_sweep(env: Env, args, work: Path) -> dict:
    path = str(work / "memory-inputs.pt")
    config = problem_config(args, tasks=args.memory_tasks)
    run_child(env, {"mode": "prepare", "config": config, "path": path}, args.threads)
    points = []
    for steps in args.memory_steps:
        # two meta-steps: the second carries Adam's state, as every step of a real run does
        spec = {"mode": "time", "impl": "metalab", "steps": steps, "dtype": "float32", "path": path,
                "warmup": 1, "iters": 1, "threads": args.threads, "malloc": args.memory_malloc}
        result = run_child(env, spec, args.threads)
        points.append({"steps": steps, "peak_rss_mib": result["rss_peak_mib"],
                       "meta_step_rss_mib": result["rss_peak_mib"] - result["rss_setup_mib"],
                       "s_per_meta_step": result["times_s"][0]})
        print(f"  S={steps:<3} peak {result['rss_peak_mib']:6.0f} MiB  "
              f"(+{points[-1]['meta_step_rss_mib']:.1f} MiB over imports and inputs)", flush=True)
    fit = fit_line([p["steps"] for p in points], [p["meta_step_rss_mib"] for p in points])
    return {"config": config, "malloc": args.memory_malloc, "points": points, "fit": fit}


def fit_line(xs: list[float], ys: list[float]) -> dict | None:
    """Least squares y = intercept + slope * x, and how far the points lie from it."""
    if len(set(xs)) < 2:
        return None
    mean_x, mean_y = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    intercept = mean_y - slope * mean_x
    residuals = [y - (intercept + slope * x) for x, y in zip(xs, ys)]
    total = sum((y - mean_y) ** 2 for y in ys)
    return {"slope_mib_per_step": slope, "intercept_mib": intercept,
            "max_abs_residual_mib": max(abs(r) for r in residuals),
            "r2": 1 - sum(r * r for r in residuals) / total if total > 0 else None}


def machine_info(args, env_info: dict) -> dict:
    return {
        "python": env_info["python"], "torch": env_info["torch"], "numpy": env_info["numpy"],
        "learn2learn": env_info["learn2learn"], "higher": env_info["higher"],
        "torch_threads": args.threads, "malloc": args.malloc, "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    # Stopped by `timeout` or kill: unwind instead, so that subprocess.run kills the running child (it
    # would otherwise go on, loading the machine) and the run's temporary folder is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    env = Env(Path(args.cache_dir).expanduser().resolve())
    env_info = ensure_env(env)
    print(f"environment: {env.venv} (torch {env_info['torch']}, learn2learn {env_info['learn2learn']}, "
          f"higher {env_info['higher']}; metalab from {SRC})")
    if args.setup_only:
        return 0
    machine = machine_info(args, env_info)
    report = {"benchmark": "maml", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine, "problem": problem_config(args),
              "settings": {k: getattr(args, k) for k in ("steps_list", "repeats", "iters", "warmup", "impls", "malloc",
                                                         "memory_steps", "memory_tasks", "memory_malloc", "quick")}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="run-", dir=env.cache) as work:
        work = Path(work)
        if not args.skip_check:
            print(f"meta-gradient check, float64, Conv4 {args.check_hidden} channels, {args.check_tasks} tasks "
                  f"(max relative difference per pair):", flush=True)
            report["check"] = gradient_check(env, args, work)
            if not report["check"]["passed"]:
                write_report(report, args.out)
                print("bench_maml: the implementations disagree; not timing them", file=sys.stderr)
                return 1
        print(f"timing, {args.repeats} interleaved rounds:", flush=True)
        runs, float32 = time_interleaved(env, args, work)
        report["runs"] = runs
        report["float32_gradients"] = float32  # the first meta-step's, at the timed size: for information
        report["summary"] = summarize(runs, args.impls)
        if args.memory_steps:
            print(f"metalab peak memory against S ({args.memory_tasks} tasks, malloc {args.memory_malloc}):",
                  flush=True)
            report["memory_vs_steps"] = memory_sweep(env, args, work)
    machine["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["wall_s"] = time.perf_counter() - started
    write_report(report, args.out)
    print_table(report)
    print(f"\nwrote {args.out}")
    return 0


def write_report(report: dict, out: str) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def print_table(report: dict) -> None:
    m, p = report["machine"], report["problem"]
    print(f"\nsecond-order MAML meta-step: Conv4 {p['hidden']} ch ({'max-pool' if p['pooling'] else 'stride 2'}, "
          f"batch norm; metalab batches tasks by {p['metalab_batching']}, chunk {p.get('metalab_chunk', 0)}"
          f"{'' if compile_mode(p) == 'false' else ', compiled ' + compile_mode(p)}), "
          f"{p['tasks']} tasks "
          f"{p['ways']}-way {p['shots']}-shot {p['queries']}-query, 28x28, inner lr {p['inner_lr']}")
    print(f"torch {m['torch']}, {m['torch_threads']} thread(s), {m['cpu_count']} CPUs, malloc {m['malloc']}, load "
          f"average {fmt_load(m['load_average_at_start'])} at start, {fmt_load(m['load_average_at_end'])} at end")
    others = [r["other_load"] for row in report["runs"].values() for rs in row.values() for r in rs
              if r["other_load"] is not None]
    if others:
        print(f"other processes kept {statistics.median(others):.2f} cores busy during a timed child "
              f"(median; {max(others):.2f} at most)")
    cores = m["cpus_usable"] or m["cpu_count"] or 1
    start_load = m["load_average_at_start"][0] if m["load_average_at_start"] else 0
    if (others and max(others) > OTHER_LOAD_LIMIT) or (not others and start_load > 0.5 * cores):
        print("WARNING: other work ran meanwhile; these timings (and ratios) are not to be trusted")
    settings = report["settings"]
    print(f"medians over {settings['repeats']} interleaved rounds; ratios against {settings['impls'][0]}")
    print(f"{'S':>3}  {'implementation':<14} {'s/meta-step':>11} {'ratio':>6}  {'CPU s':>8} {'ratio':>6}"
          f"  {'peak RSS MiB':>12} {'ratio':>6}  {'meta-step MiB':>13} {'ratio':>6}  {'first loss':>10}")
    for steps, row in report["summary"].items():
        for impl, r in row.items():
            print(f"{steps:>3}  {impl:<14} {r['s_per_meta_step']:11.3f} {fmt_ratio(r['s_per_meta_step_ratio'])}"
                  f"  {r['cpu_s_per_meta_step']:8.3f} {fmt_ratio(r['cpu_s_per_meta_step_ratio'])}"
                  f"  {r['peak_rss_mib']:12.0f} {fmt_ratio(r['peak_rss_mib_ratio'])}"
                  f"  {r['meta_step_rss_mib']:13.0f} {fmt_ratio(r['meta_step_rss_mib_ratio'])}"
                  f"  {r['first_loss']:10.6f}")
    print("(CPU s: process CPU time over all threads; meta-step MiB: peak RSS minus the peak before the first "
          "meta-step, i.e. above imports and inputs)")
    for steps, row in report["summary"].items():
        print(f"S={steps}, peak RSS of the timed steps alone (after warm-up) and the first (warm-up) step's seconds: "
              + "; ".join(f"{impl} {fmt_number(r.get('timed_peak_rss_mib'), '.0f')} MiB, "
                          f"{fmt_number(r.get('warmup_s'), '.2f')} s" for impl, r in row.items()))
    for steps, compared in report.get("float32_gradients", {}).items():
        print(f"float32 meta-gradients of the first step, S={steps} (max relative difference): "
              + describe_pairs(compared["pairs"]))
    sweep = report.get("memory_vs_steps")
    if sweep:
        print(f"\nmetalab peak memory against inner steps ({sweep['config']['tasks']} tasks, "
              f"malloc {sweep['malloc']}):")
        print(f"{'S':>3}  {'peak RSS MiB':>12}  {'meta-step MiB':>13}")
        for point in sweep["points"]:
            print(f"{point['steps']:>3}  {point['peak_rss_mib']:12.0f}  {point['meta_step_rss_mib']:13.1f}")
        fit = sweep["fit"]
        if fit:
            r2 = f"{fit['r2']:.4f}" if fit["r2"] is not None else "-"
            print(f"fit: meta-step MiB = {fit['intercept_mib']:.1f} + {fit['slope_mib_per_step']:.2f} * S "
                  f"(R^2 {r2}, largest residual {fit['max_abs_residual_mib']:.1f} MiB)")


def describe_pairs(pairs: dict) -> str:
    return "; ".join(f"{name} {pair['max_relative']:.1e}" + (" (bitwise equal)" if pair["bitwise_equal"] else "")
                     for name, pair in pairs.items())


def fmt_load(load) -> str:
    return "-" if not load else "/".join(f"{x:.2f}" for x in load)


def fmt_number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def median_or_none(values: list):
    return statistics.median(values) if values and None not in values else None


def fmt_ratio(ratio) -> str:
    return f"{ratio:6.2f}" if ratio is not None else f"{'-':>6}"


if __name__ == "__main__":
    sys.exit(main())
