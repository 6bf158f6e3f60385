"""A roofline of the MAML meta-step on this CPU: the machine's peaks, the step's FLOPs, and each layer kind's share.

Run on demand, on an otherwise idle machine (see README.md here):

    python benchmarks/bench_roofline.py                        # 2 torch threads, 5 interleaved rounds
    python benchmarks/bench_roofline.py --quick --threads 1    # one round, one call each: does it all work?

Everything runs in one process, in --repeats interleaved rounds after --warmup untimed ones (each round times every
item in turn, so the machine's drift hits all alike); the table shows medians.

  peaks      float32 matrix product: torch.mm of two --mm-size squares (2 n^3 FLOPs), in GFLOP/s; memory bandwidth:
             torch.add(a, b, out=c) on --bandwidth-mib MiB tensors, counting the bytes read and written (3 tensors)
  meta-step  the second-order MAML meta-gradient (bench_precision.py's meta_gradient) of the omniglot-5w1s-maml
             preset (Conv4-32, stride-2 convolutions, 16 tasks 5-way 1-shot 5-query, real meta-training tasks) at
             each S of --steps-list, tasks under vmap (the preset's setting) and in a loop, both with torch's batch
             norm (as problem.py chooses for the MAML family); its FLOPs counted once per S with
             torch.utils.flop_counter.FlopCounterMode, by operator
  layers     each convolution and batch norm of that Conv4 at the shapes of that step (batch = tasks x (support +
             query) images), forward and backward, timed in isolation: one weight for the whole batch in contiguous
             and in channels-last memory format, and under vmap with one weight per task (the meta-step's way: a
             grouped convolution, batch norm statistics per task). The batch norm's FLOPs are negligible: it is
             read in GB/s

For each row: GFLOP/s = FLOPs / seconds and its fraction of the matmul peak; GB/s = bytes / seconds and its fraction
of the bandwidth; arithmetic intensity = FLOPs per byte. A layer's bytes are the inputs and outputs of its forward
and backward (x, parameters and output gradient in; output, input and parameter gradients out): the least memory
traffic it can have. Below the ridge (peak GFLOP/s / peak GB/s, in FLOP per byte) a row is bound by memory, above it
by arithmetic. FlopCounterMode counts convolutions and matrix products; elementwise work (batch norm, ReLU, the loss)
is not counted. The meta-step's fraction of the matmul peak is the figure of merit.

Writes benchmarks/results/roofline-cpu.json (--out): the settings, machine, every timing, the counts and the medians.
"""

import argparse
import copy
import statistics
import sys
import time

import torch
from bench_batching import machine, write_report
from bench_precision import meta_gradient, preset_method, trainable
from torch import nn
from torch.func import functional_call, vmap
from torch.utils.flop_counter import FlopCounterMode

from metalab.data.paths import data_dir as default_data_dir
from metalab.runtime import configure_torch

FORMATS = ("contiguous", "channels-last", "vmap")


def count_flops(compute) -> tuple[int, dict]:
    """(total FLOPs, {operator: FLOPs}) of one call of compute()."""
    counter = FlopCounterMode(display=False)
    with counter:
        compute()
    return counter.get_total_flops(), {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


def peaks(args) -> dict:
    """{name: (compute, FLOPs, bytes)} of the two peak measurements."""
    n, elements = args.mm_size, args.bandwidth_mib * 2**20 // 4
    # Every output written before it is timed (randn, not empty): a first write to fresh pages costs page faults.
    a, b, product = torch.randn(n, n), torch.randn(n, n), torch.randn(n, n)
    x, y, total = torch.randn(elements), torch.randn(elements), torch.randn(elements)
    return {"matmul": (lambda: torch.mm(a, b, out=product), 2 * n**3, 3 * product.nbytes),
            "bandwidth": (lambda: torch.add(x, y, out=total), elements, 3 * total.nbytes)}


def meta_steps(args) -> tuple[dict, dict]:
    """({"S=s vmap" | "S=s loop": compute}, {s: {"flops", "by_op"}}) for each S of --steps-list."""
    computes, counts = {}, {}
    for steps in args.steps_list:
        for batching in ("vmap", "loop"):
            config, problem, method = preset_method(steps, args, task_batching=batching)
            meta = trainable(method.init_meta())
            episode = problem.tasks["train"].sample(torch.Generator().manual_seed(args.seed), config.meta_batch_size)
            computes[f"S={steps} {batching}"] = compute = (lambda m=method, p=meta, e=episode: meta_gradient(m, p, e))
            if batching == "loop":
                # Counted in the loop: under vmap a task's convolution becomes one grouped convolution of all the
                # tasks (groups = tasks), and FlopCounterMode's convolution_backward formula ignores `groups` for
                # the weight gradient, counting it tasks times over. The loop computes the same products task by
                # task, so its count is the vmap step's too.
                total, by_op = count_flops(compute)
                counts[steps] = {"flops": total, "by_op": by_op, "tasks": config.meta_batch_size,
                                 "images_per_task": config.ways * (config.shots + config.queries)}
    return computes, counts


def layer_shapes(args, tasks: int, images: int) -> list[tuple[str, nn.Module, tuple]]:
    """[(name, module, input shape [tasks * images, C, H, W])] of the preset's Conv4."""
    _, problem, _ = preset_method(args.steps_list[0], args)
    shapes = []
    hooks = [module.register_forward_hook(lambda m, inputs, _: shapes.append((m, tuple(inputs[0].shape))))
             for module in problem.learner.model.modules() if isinstance(module, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.no_grad():
        problem.learner.model(torch.zeros(tasks * images, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    named, index = [], 0
    for module, shape in shapes:
        index += isinstance(module, nn.Conv2d)
        kind = (f"conv{index} {module.in_channels}->{module.out_channels}" if isinstance(module, nn.Conv2d)
                else f"norm{index} {shape[1]}")
        named.append((f"{kind} {shape[2]}x{shape[3]}", module, shape))
    return named


def layer_pass(module: nn.Module, shape: tuple, fmt: str, tasks: int, input_grad: bool):
    """(compute, bytes): forward and backward of `module` on an input of `shape` in memory format `fmt`. The first
    convolution's input is the images, which need no gradient in the meta-step, so neither does it here."""
    memory_format = torch.channels_last if fmt == "channels-last" else torch.contiguous_format
    module = copy.deepcopy(module).to(memory_format=memory_format)
    x = torch.randn(shape).contiguous(memory_format=memory_format)
    params = {name: p.detach() for name, p in module.named_parameters()}
    if fmt == "vmap":  # [tasks, images, C, H, W] and one copy of every parameter per task, as the meta-step has them
        x = x.reshape(tasks, -1, *shape[1:])
        params = {name: p.expand(tasks, *p.shape).clone() for name, p in params.items()}
    x.requires_grad_(input_grad)
    for p in params.values():
        p.requires_grad_(True)

    def forward():
        # A view of x, not the leaf itself, goes in: FlopCounterMode's module hooks make autograd.grad refuse a leaf
        # that entered a module.
        images = x.view_as(x)
        if fmt == "vmap":
            return vmap(lambda p, task_images: functional_call(module, p, (task_images,)))(params, images)
        return functional_call(module, params, (images,))

    with torch.no_grad():
        grad_output = torch.randn_like(forward())
    wrt = ([x] if input_grad else []) + list(params.values())
    traffic = x.nbytes + 2 * grad_output.nbytes + sum(t.nbytes for t in wrt + list(params.values()))
    return (lambda: torch.autograd.grad(forward(), wrt, grad_output)), traffic


def layers(args, tasks: int, images: int) -> tuple[dict, dict]:
    """({"name | format": compute}, {same key: {"flops", "bytes"}})."""
    computes, counts = {}, {}
    for index, (name, module, shape) in enumerate(layer_shapes(args, tasks, images)):
        for fmt in FORMATS:
            compute, traffic = layer_pass(module, shape, fmt, tasks, input_grad=index > 0)
            # Counted on the contiguous pass: the same products in every format, and FlopCounterMode overcounts the
            # grouped convolution that vmap makes (see meta_steps).
            flops = count_flops(compute)[0] if fmt == "contiguous" else counts[f"{name} | contiguous"]["flops"]
            computes[f"{name} | {fmt}"] = compute
            counts[f"{name} | {fmt}"] = {"flops": flops, "bytes": traffic}
    return computes, counts


def time_interleaved(items: dict, args) -> dict:
    """{name: [seconds per call, one per round]}; items = {name: (compute, calls per timing)}."""
    times = {name: [] for name in items}
    for round_ in range(args.warmup + args.repeats):
        for name, (compute, calls) in items.items():
            start = time.perf_counter()
            for _ in range(calls):
                compute()
            if round_ >= args.warmup:
                times[name].append((time.perf_counter() - start) / calls)
    return times


def rate(seconds: float, peak: dict, counts: dict) -> dict:
    """The rates of a row whose counts["flops"] (and counts["bytes"], if any) take `seconds`, against the peaks."""
    flops = counts["flops"]
    result = {"seconds": seconds, "gflop_s": flops / seconds / 1e9, "peak_fraction": flops / seconds / 1e9 /
              peak["gflop_s"]}
    if "bytes" in counts:
        traffic = counts["bytes"]
        result.update(gb_s=traffic / seconds / 1e9, bandwidth_fraction=traffic / seconds / 1e9 / peak["gb_s"],
                      flop_per_byte=flops / traffic)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--steps-list", default="1,5", help="inner steps S of the meta-step, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds (medians reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--layer-iters", type=int, default=10, help="calls per timing of a layer (a few ms each)")
    parser.add_argument("--peak-iters", type=int, default=5, help="calls per timing of the matmul and the add")
    parser.add_argument("--quick", action="store_true", help="1 round, no warm-up, 1 call per timing")
    parser.add_argument("--mm-size", type=int, default=2048, help="side of the matmul's square matrices")
    parser.add_argument("--bandwidth-mib", type=int, default=256, help="size of each tensor of the bandwidth add")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="default benchmarks/results/roofline-cpu.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.layer_iters, args.peak_iters = 1, 0, 1, 1
    args.steps_list = [int(s) for s in args.steps_list.split(",")]
    args.data_dir, args.device = str(args.data_dir or default_data_dir()), "cpu"
    configure_torch(args.threads, args.device)
    torch.manual_seed(args.seed)
    report = machine(args)  # the load average at the start

    peak_items = peaks(args)
    step_computes, step_counts = meta_steps(args)
    first = step_counts[args.steps_list[0]]
    layer_computes, layer_counts = layers(args, first["tasks"], first["images_per_task"])
    times = time_interleaved({**{n: (c, args.peak_iters) for n, (c, _, _) in peak_items.items()},
                              **{n: (c, 1) for n, c in step_computes.items()},
                              **{n: (c, args.layer_iters) for n, c in layer_computes.items()}}, args)
    median = {name: statistics.median(values) for name, values in times.items()}
    matmul, add = peak_items["matmul"], peak_items["bandwidth"]
    peak = {"gflop_s": matmul[1] / median["matmul"] / 1e9, "gb_s": add[2] / median["bandwidth"] / 1e9}
    peak["ridge_flop_per_byte"] = peak["gflop_s"] / peak["gb_s"]
    steps = {}
    for name in step_computes:  # "S=1 vmap": the FLOPs counted for S=1
        counts = step_counts[int(name.split()[0].removeprefix("S="))]
        steps[name] = {**counts, **rate(median[name], peak, counts)}
    rows = {name: {**counts, **rate(median[name], peak, counts)} for name, counts in layer_counts.items()}
    report["results"] = {"preset": "omniglot-5w1s-maml", "peak": peak, "meta_steps": steps, "layers": rows,
                         "times_s": times, "threads": torch.get_num_threads()}
    write_report(report, args, "roofline")
    print_table(peak, steps, rows, args)
    return 0


def print_table(peak: dict, steps: dict, rows: dict, args) -> None:
    print(f"\n{args.threads} threads, medians of {args.repeats} rounds. Peaks: matmul {args.mm_size}^2 "
          f"{peak['gflop_s']:.1f} GFLOP/s, bandwidth {peak['gb_s']:.1f} GB/s, ridge {peak['ridge_flop_per_byte']:.1f}"
          " FLOP/byte")
    print(f"\n{'meta-step':12} {'GFLOP':>7} {'s':>8} {'GFLOP/s':>8} {'of peak':>8}")
    for name, row in steps.items():
        print(f"{name:12} {row['flops'] / 1e9:7.2f} {row['seconds']:8.4f} {row['gflop_s']:8.1f} "
              f"{row['peak_fraction']:8.1%}")
    for s in args.steps_list:
        by_op = steps[f"S={s} loop"]["by_op"]
        print(f"  S={s} GFLOP by operator: " + ", ".join(f"{op.removeprefix('aten.')} {n / 1e9:.2f}" for op, n in
                                                      sorted(by_op.items(), key=lambda kv: -kv[1])))
    print(f"\n{'layer, input HxW':20} {'format':13} {'GFLOP':>7} {'MB':>7} {'FLOP/B':>7} {'ms':>8} {'GFLOP/s':>8} "
          f"{'of peak':>8} {'GB/s':>7} {'of bw':>7} bound")
    for key, row in rows.items():
        name, fmt = key.split(" | ")
        bound = "memory" if row["flop_per_byte"] < peak["ridge_flop_per_byte"] else "compute"
        print(f"{name:20} {fmt:13} {row['flops'] / 1e9:7.3f} {row['bytes'] / 1e6:7.1f} {row['flop_per_byte']:7.1f} "
              f"{row['seconds'] * 1e3:8.2f} {row['gflop_s']:8.1f} {row['peak_fraction']:8.1%} {row['gb_s']:7.1f} "
              f"{row['bandwidth_fraction']:7.1%} {bound}")


if __name__ == "__main__":
    sys.exit(main())
