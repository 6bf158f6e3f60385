"""Where the memory of the vmap MAML meta-step goes: saved tensors by operator, layer and phase, per task.

Run on demand (memory only, no timing: safe on a busy machine):

    python benchmarks/memory_meta_step.py                       # the presets' problem, S = 1 and 5
    python benchmarks/memory_meta_step.py --steps-list 1 --tasks 4

The problem is the Omniglot presets' (bench_batching.py's `problem`): Conv4-32 with stride-2 convolutions and
torch's batch norm, 16 random 5-way 1-shot 5-query tasks under vmap, second-order MAML
(inner lr 0.4). For each S, in a fresh child process with one torch thread:

  saved     After the forward pass (the mean query loss computed, before backward), the autograd graph is
            walked from the loss and every tensor a node keeps for backward (`_saved_*` attributes, or
            `saved_tensors` for an autograd.Function's node) is counted once per storage, leaving out the inputs
            and meta-parameters, which exist anyway. Each is
            labelled by the operator that saves it, its spatial size (the layer: 28 the images, 14/7/4/2 the
            outputs of conv blocks 1-4, "flat" the rest) and the phase that created the node (support forward
            of inner step k, its inner gradient and update, query forward), from autograd sequence numbers
            read in module hooks. (The walk dates from when the inner gradient was torch.func.grad, which
            refuses saved-tensor hooks.)
  peak      One meta-step (forward and backward) under torch.profiler(profile_memory=True): the peak of live
            bytes from the allocator's events, and what is live at that moment by phase (forward, or the
            backward node running) and allocating operator.
  rss       Peak RSS above the RSS before the first meta-step, for 1 task and for --tasks tasks (two more
            children), with glibc's allocator mapping every block of 64 KiB or more on its own (bench_maml's
            "mmap" setting) so that RSS follows live memory: the difference over tasks - 1 is the memory per task;
            the 1-task figure holds what every process pays once on its first meta-step (kernels' code, and
            the modules imported on first use).

Writes benchmarks/results/memory-meta-step-cpu.json (--out) and prints the tables.
"""

import collections
import json
import sys

import torch
from bench_batching import machine, maml, meta_step_fn, meta_step_parser, problem, run_child, write_report

LAYER_BY_SIZE = {28: "images 28x28", 14: "block 1 (14x14)", 7: "block 2 (7x7)", 4: "block 3 (4x4)",
                 2: "block 4 (2x2)"}


def layer_of(tensor) -> str:
    if tensor.dim() >= 4 and tensor.shape[-2:] == (3, 3):
        return "conv weights"
    return LAYER_BY_SIZE.get(tensor.shape[-1], "flat") if tensor.dim() >= 4 else "flat"


def phase_marks(model, steps: int) -> list:
    """Module hooks that record (autograd sequence number, phase) as the forward passes run: pass k < steps is
    the support set's at inner step k, pass `steps` the query set's; after each support pass comes its inner
    gradient and update."""
    marks, passes = [], [0]

    def before(module, args):
        marks.append((torch._C._autograd._get_sequence_nr(), label(passes[0])))

    def after(module, args, output):
        if passes[0] < steps:
            marks.append((torch._C._autograd._get_sequence_nr(), f"inner gradient + update {passes[0] + 1}"))
        passes[0] += 1

    def label(k):
        return f"support forward {k + 1}" if k < steps else "query forward + loss"

    model.register_forward_pre_hook(before)
    model.register_forward_hook(after)
    return marks


def phase_at(marks: list, sequence_nr: int) -> str:
    found = "before"
    for mark, name in marks:
        if mark > sequence_nr:
            break
        found = name
    return found


def saved_tensors(loss, exclude: list, marks: list) -> tuple[int, dict]:
    """(bytes, {"op | attribute | layer | phase": bytes}) of the storages the graph under `loss` saves."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen, storages, rows = set(), set(), collections.Counter()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(f for f, _ in node.next_functions)
        # C++ nodes expose each saved tensor as `_saved_<name>`; an autograd.Function's node as saved_tensors
        attributes = [a for a in dir(node) if a.startswith("_saved_")] + ["saved_tensors"] * hasattr(node, "to_save")
        for attribute in attributes:
            try:
                value = getattr(node, attribute)
            except RuntimeError:  # already freed, or not a tensor the node can return
                continue
            for t in value if isinstance(value, (tuple, list)) else [value]:
                if not isinstance(t, torch.Tensor):
                    continue
                storage = t.untyped_storage()
                if storage.data_ptr() in skip or storage.data_ptr() in storages or storage.nbytes() == 0:
                    continue
                storages.add(storage.data_ptr())
                phase = phase_at(marks, node._sequence_nr())
                name = f"{node.name()} | {attribute.removeprefix('_saved_')} | {layer_of(t)} | {phase}"
                rows[name] += storage.nbytes()
    return sum(rows.values()), dict(rows.most_common())


def profiled_peak(compute) -> dict:
    """The peak of live bytes during compute() from the profiler's allocation events, and what is live then."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        compute()
    events = []

    def visit(node, stack):
        if type(node.extra_fields).__name__ == "_ExtraFields_Allocation":
            events.append((node.start_time_ns, node.extra_fields.alloc_size, node.extra_fields.ptr, stack))
            return
        for child in node.children:
            visit(child, stack + (node.name,))

    for root in prof.profiler.kineto_results.experimental_event_tree():
        visit(root, ())
    live, current, peak, at_peak = {}, 0, 0, {}
    for _, size, ptr, stack in sorted(events, key=lambda e: e[0]):
        if size > 0:
            live[ptr] = (size, stack)
            current += size
        elif ptr in live:
            current -= live.pop(ptr)[0]
        if current > peak:
            peak, at_peak = current, dict(live)
    rows = collections.Counter()
    for size, stack in at_peak.values():
        backward = next((s.split(": ")[-1] for s in stack if s.startswith("autograd::engine")), None)
        rows[f"{'backward ' + backward if backward else 'forward'} | {stack[-1] if stack else '?'}"] += size
    return {"peak_bytes": peak, "live_at_peak": dict(rows.most_common())}


def child(spec: dict) -> dict:
    import bench_maml

    bench_maml.configure_malloc("mmap" if spec["mode"] == "rss" else "metalab")
    torch.set_num_threads(1)
    args = spec["args"]
    model, episode = problem(spec["tasks"], args["ways"], args["shots"], args["queries"], args["hidden"], "stride",
                             "batch", torch.float32, "cpu")
    meta, compute = meta_step_fn(model, episode, spec["steps"], args["inner_lr"], "vmap")
    if spec["mode"] == "rss":
        before = bench_maml.peak_rss_mib()
        compute()
        first = bench_maml.peak_rss_mib()
        compute()
        return {"first_step_mib": first - before, "peak_above_start_mib": bench_maml.peak_rss_mib() - before}
    compute()  # the first meta-step imports and initializes what later ones reuse
    for p in meta["theta"].values():
        p.grad = None
    marks = phase_marks(model, spec["steps"])
    loss, _ = maml(model, spec["steps"], args["inner_lr"], "vmap").meta_loss(meta, episode, 0)  # to walk its graph
    total, rows = saved_tensors(loss, [*episode, *meta["theta"].values()], marks)
    del loss
    peak = profiled_peak(compute)
    return {"saved_bytes": total, "saved": rows, **peak}


def summarize(rows: dict, tasks: int, key: int) -> dict:
    """MiB per task by one field of the "op | attribute | layer | phase" keys."""
    totals = collections.Counter()
    for name, size in rows.items():
        totals[name.split(" | ")[key]] += size / tasks / 2**20
    return {k: round(v, 3) for k, v in totals.most_common()}


def main(argv=None) -> int:
    parser = meta_step_parser(__doc__, threads=1, steps_list="1,5", tasks=16, queries=5, hidden=32, inner_lr=0.4)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.device != "cpu":
        parser.error("memory_meta_step.py measures the CPU meta-step only")
    report = machine(args)
    for steps in (int(s) for s in args.steps_list.split(",")):
        spec = {"args": vars(args), "steps": steps, "tasks": args.tasks}
        graph = run_child({**spec, "mode": "graph"}, __file__)
        rss = {tasks: run_child({**spec, "tasks": tasks, "mode": "rss"}, __file__) for tasks in (1, args.tasks)}
        if any("error" in r for r in [graph, *rss.values()]):
            raise SystemExit(f"memory_meta_step: a child failed: {graph} {rss}")
        per_task_rss = (rss[args.tasks]["peak_above_start_mib"] - rss[1]["peak_above_start_mib"]) / (args.tasks - 1)
        report["results"][str(steps)] = {
            "saved_mib": graph["saved_bytes"] / 2**20, "saved_mib_per_task": graph["saved_bytes"] / args.tasks / 2**20,
            "saved_mib_per_task_by_layer": summarize(graph["saved"], args.tasks, 2),
            "saved_mib_per_task_by_phase": summarize(graph["saved"], args.tasks, 3),
            "saved_mib_per_task_by_op": summarize(graph["saved"], args.tasks, 0),
            "saved_bytes_by_op_attribute_layer_phase": graph["saved"],
            "peak_live_mib": graph["peak_bytes"] / 2**20,
            "peak_live_mib_per_task": graph["peak_bytes"] / args.tasks / 2**20,
            "live_at_peak_mib": {k: round(v / 2**20, 3) for k, v in graph["live_at_peak"].items()},
            "rss_above_start_mib": {str(t): r for t, r in rss.items()}, "rss_mib_per_task": per_task_rss}
    report["activations_mib_per_task"] = activation_mib(args)
    write_report(report, args, "memory-meta-step")
    print_tables(report, args.tasks)
    return 0


def activation_mib(args) -> dict:
    """What one forward pass of a task's images through the Conv4 produces: each block's output, once."""
    per_image, size = 0, 28
    for _ in range(4):
        size = (size + 1) // 2
        per_image += args.hidden * size * size
    support, query = args.ways * args.shots, args.ways * args.queries
    return {"floats_per_image": per_image, "support_images": support, "query_images": query,
            "support_and_query_one_tensor_per_block_mib": (support + query) * per_image * 4 / 2**20}


def print_tables(report: dict, tasks: int) -> None:
    print(f"MiB per task ({tasks} tasks under vmap); activations: "
          f"{report['activations_mib_per_task']['support_and_query_one_tensor_per_block_mib']:.2f} MiB per task for "
          "one tensor per block of the support and query passes")
    for steps, r in report["results"].items():
        one, all_tasks = (r["rss_above_start_mib"][t]["peak_above_start_mib"] for t in ("1", str(tasks)))
        print(f"\nS={steps}: saved for backward {r['saved_mib_per_task']:.2f}, peak live "
              f"{r['peak_live_mib_per_task']:.2f}, peak RSS {r['rss_mib_per_task']:.2f} per task "
              f"(1 task: {one:.0f} MiB above start, {tasks} tasks: {all_tasks:.0f})")
        for field in ("layer", "phase", "op"):
            rows = r[f"saved_mib_per_task_by_{field}"]
            print(f"  saved by {field}: " + ", ".join(f"{k} {v:.3f}" for k, v in list(rows.items())[:8]))
        live = list(r["live_at_peak_mib"].items())[:6]
        print("  live at the peak: " + ", ".join(f"{k} {v / tasks:.3f}" for k, v in live))


if __name__ == "__main__":
    sys.exit(main())
