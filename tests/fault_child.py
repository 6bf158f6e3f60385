"""`python tests/fault_child.py ARGS...`: run `metalab ARGS` in this process, after installing the fault named by
$METALAB_FAULT ("KIND:N": SIGKILL this process at the N-th occurrence of KIND). Used by tests/test_faults.py.

Kinds: meta-step (inside the N-th meta-step, after its loss), checkpoint-half (half-way through writing the N-th
checkpoint's bytes), checkpoint-before-rename / checkpoint-after-rename (around the N-th checkpoint's rename),
validation (inside the N-th validation, after its first batch), log-half (half-way through the N-th metrics
record), cache-decode (after the N-th decoded drawing of the Omniglot cache), cache-half (half-way through
writing a cache file), hold (at the N-th meta-step: touch $METALAB_FAULT_HELD, wait for $METALAB_FAULT_RELEASE).
"""

import os
import signal
import sys
import time
from pathlib import Path

COUNTS: dict[str, int] = {}


def due(kind: str, wanted: str, at: int) -> bool:
    """Count an occurrence of `kind`; true at the at-th one of the wanted kind."""
    COUNTS[kind] = COUNTS.get(kind, 0) + 1
    return kind == wanted and COUNTS[kind] == at


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(wanted: str, at: int) -> None:
    from metalab import atomic, checkpoint
    from metalab.data import omniglot
    from metalab.methods.optimization import GradientMethod
    from metalab.training import loop, metrics_log

    real_meta_loss = GradientMethod.meta_loss

    def meta_loss(self, meta, episode, step):
        result = real_meta_loss(self, meta, episode, step)
        if due("meta-step", wanted, at):
            die()
        if wanted == "hold" and COUNTS["meta-step"] == at:
            Path(os.environ["METALAB_FAULT_HELD"]).touch()
            while not Path(os.environ["METALAB_FAULT_RELEASE"]).exists():
                time.sleep(0.05)
        return result

    GradientMethod.meta_loss = meta_loss

    real_replace = atomic.os.replace

    def replace(src, dst):
        checkpoint_file = str(dst).endswith(".pt")
        if checkpoint_file and due("checkpoint-before-rename", wanted, at):
            die()
        real_replace(src, dst)
        if checkpoint_file and due("checkpoint-after-rename", wanted, at):
            die()

    atomic.os.replace = replace

    real_open = open

    class HalfWriter:
        """A file whose N-th write stops half-way, as a kill during write() leaves it."""

        def __init__(self, file, kind):
            self.file, self.kind = file, kind

        def write(self, data):
            if due(self.kind, wanted, at):
                self.file.write(bytes(data)[: len(data) // 2] if not isinstance(data, str) else data[: len(data) // 2])
                self.file.flush()
                die()
            return self.file.write(data)

        def __getattr__(self, name):
            return getattr(self.file, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

    def checkpoint_open(path, mode="r", *args, **kwargs):
        return HalfWriter(real_open(path, mode, *args, **kwargs), "checkpoint-half")

    checkpoint.open = checkpoint_open

    def omniglot_open(path, mode="r", *args, **kwargs):
        return HalfWriter(real_open(path, mode, *args, **kwargs), "cache-half")

    omniglot.open = omniglot_open

    real_write = metrics_log.MetricsLog._write

    def log_write(self, text):
        if due("log-half", wanted, at):
            self.file.write(text[: len(text) // 2])
            self.file.flush()
            die()
        real_write(self, text)

    metrics_log.MetricsLog._write = log_write

    real_evaluate = loop.evaluate

    def evaluate(meta, method, episodes, steps, *rest):
        if due("validation", wanted, at):
            def first_then_die(batches=episodes):
                yield batches[0]
                die()

            episodes = first_then_die()
        return real_evaluate(meta, method, episodes, steps, *rest)

    loop.evaluate = evaluate

    real_preprocess = omniglot.preprocess_image

    def preprocess(*args):
        if due("cache-decode", wanted, at):
            die()
        return real_preprocess(*args)

    omniglot.preprocess_image = preprocess


if __name__ == "__main__":
    fault = os.environ.get("METALAB_FAULT", "")
    if fault:
        kind, _, count = fault.partition(":")
        install(kind, int(count))
    from metalab.cli.main import main

    sys.exit(main(sys.argv[1:]))
