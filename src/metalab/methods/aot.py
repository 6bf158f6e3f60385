"""Programs compiled ahead of time (`--compile aot`): a function of tensors, traced and compiled by AOTInductor in
a forked child process and loaded into this one as a shared library, so that the training process never imports
the compiler (torch._dynamo, torch._inductor) nor keeps the memory it takes.

    program = ahead_of_time(fn, example_inputs)   # fn(*tensors) -> tuple of tensors
    outputs = program(inputs)                     # inputs of the examples' shapes, dtypes and devices

The child traces fn with make_fx into a graph of aten operators and names the program by a hash of that graph,
its inputs' shapes and dtypes, the thread count its kernels are parallel over (the caller's), torch's version and
the CPU's vector capability: a program on disk is loaded only for the very graph and setting it was compiled for,
so changed code or settings compile anew and never load a stale one.
It compiles only if no program of that name is in the cache folder (data/paths.py: program_dir), under a lock,
so that processes that need the same program (the ranks of a torchrun) build it once. A fork rather than a new
interpreter: the child has the function itself, whatever network or loss it closes over, with nothing to rebuild.
"""

import fcntl
import hashlib
import os
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from metalab.atomic import writable_folder
from metalab.data.paths import program_dir
from metalab.errors import MetalabError


def ahead_of_time(fn: Callable[..., tuple[Tensor, ...]], example_inputs: list[Tensor]
                  ) -> Callable[[list[Tensor]], list[Tensor]]:
    """fn as a compiled program: a callable of a list of tensors (contiguous, as the examples) to fn's outputs."""
    folder = writable_folder(program_dir(), "the program cache ($METALAB_CACHE/programs)")
    path = _compile_in_child(fn, example_inputs, folder)
    # The loader is torch's C++ one: creating and running it imports nothing of the compiler.
    loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)
    return lambda inputs: loader.boxed_run(list(inputs))


def _compile_in_child(fn: Callable, inputs: list[Tensor], folder: Path) -> Path:
    """The path of fn's program, compiled by a forked child if not on disk yet."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        status, message = 1, "the compiling process failed"
        try:
            message, status = str(_trace_and_compile(fn, inputs, folder)), 0
        except BaseException as error:  # whatever it is, the parent reports it and the child leaves
            message = f"{type(error).__name__}: {error}".strip().splitlines()[0][:300]
        finally:
            os.write(write_end, message.encode())
            os._exit(status)  # no atexit handlers or buffers of the parent's run in the child
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        message = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0:
        reason = message or "the compiling process died"
        raise MetalabError(f"--compile aot could not compile the meta-gradient ({reason}); use --compile true or false")
    return Path(message)


def _trace_and_compile(fn: Callable, inputs: list[Tensor], folder: Path) -> Path:
    from torch.fx.experimental.proxy_tensor import make_fx

    threads = torch.get_num_threads()  # the parent's: the program's own kernels are parallel over as many
    torch.set_num_threads(1)  # the parent's OpenMP threads are not in this child; tracing needs none
    warnings.simplefilter("ignore")  # torch's deprecation notices about its own internals: nothing for the user
    graph = make_fx(fn)(*inputs)
    path = folder / f"{_program_name(graph, inputs, threads)}.pt2"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in folder.glob(f".{path.stem}.*.pt2"):  # a builder killed part-way: none runs while we hold the lock
            stale.unlink(missing_ok=True)
        if not path.exists():
            from torch._inductor import aoti_compile_and_package, config

            config.cpp.threads = threads  # else the child's one thread, and every fused kernel would run serially
            exported = torch.export.export(graph, tuple(inputs), strict=False)
            partial = path.with_name(f".{path.stem}.{os.getpid()}.pt2")
            try:
                aoti_compile_and_package(exported, package_path=str(partial))
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
    return path


def _program_name(graph: torch.fx.GraphModule, inputs: list[Tensor], threads: int) -> str:
    """A hash of everything the compiled program depends on."""
    digest = hashlib.sha256()
    for part in (torch.__version__, torch.backends.cpu.get_cpu_capability(), threads, graph.code,
                 [(tuple(t.shape), t.stride(), str(t.dtype), str(t.device)) for t in inputs]):
        digest.update(repr(part).encode())
    for node in graph.graph.nodes:
        if node.op == "get_attr":  # tensors the trace made constants of
            constant = getattr(graph, node.target)
            digest.update(repr((node.target, tuple(constant.shape), str(constant.dtype))).encode())
            digest.update(constant.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]
