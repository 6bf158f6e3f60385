"""Why support copies hurt a network trained with elastic distortions: the copies' change of shape against the
blur of their resampling, on the same episodes.

    python docs/analysis/support_copies.py NAME=CHECKPOINT ... [--ways 20] [--episodes 300] [--copies 4]
        [--part val] [--seed 0] [--threads 1]

For each checkpoint (a learner that takes a support set of any size), the same episodes as `metalab eval --part
PART --ways N --seed S` with the support set grown by C copies of each image, made five ways:

    none           no copies (`metalab eval`'s own score)
    affine 0.5     `--support-augment C --support-augment-strength 0.5`: rotation, shear, scale and shift
    elastic 34     elastic distortions as training's `--elastic-alpha 34` (sigma 4)
    half pixel     moved by half a pixel to the 8 neighbouring positions in turn: the same shape, every stroke
                   blurred by the bilinear resampling that the other distortions also apply
    whole pixel    moved by one pixel the same ways: nothing resampled (`--support-augment-kind shift`'s copies)

Accuracy ± 95% interval and the difference against no copies, paired over the episodes. If the half-pixel copies
cost what the distortions cost and the whole-pixel ones do not, the resampling is what hurts, not the shape.
"""

import argparse
import sys
from pathlib import Path

import torch

from metalab.data.classification import omniglot_tasks
from metalab.data.elastic import elastic_distort, warp
from metalab.data.episode import Episode, fixed_episodes
from metalab.data.splits import load_split_data
from metalab.data.support_augment import NEIGHBOURS, SupportCopies, augment_support
from metalab.evaluation.checkpoints import image_method
from metalab.evaluation.evaluate import per_episode_scores
from metalab.evaluation.stats import paired_difference, summarize
from metalab.problem import EVAL_QUERIES
from metalab.studies.tables import difference_cell, estimate_cell, markdown_table


def moved(episode: Episode, copies: int, pixels: float) -> Episode:
    """The episode with `copies` (at most 8) copies of each support image moved by `pixels` to the neighbouring
    positions, in --support-augment-kind shift's order."""
    support = episode.support_x  # [B, S, C, H, W]
    flat = support.reshape(-1, *support.shape[2:])
    grown = [support]
    for copy in range(copies):
        rows, columns = NEIGHBOURS[copy]
        field = torch.tensor([-rows * pixels, -columns * pixels]).view(1, 2, 1, 1).expand(len(flat), 2,
                                                                                             *flat.shape[-2:])
        grown.append(warp(flat, field.contiguous()).view_as(support))
    return Episode(torch.cat(grown, 1), episode.support_y.repeat(1, 1 + copies), episode.query_x, episode.query_y)


def elastic_copies(episode: Episode, generator: torch.Generator, copies: int) -> Episode:
    support = episode.support_x
    warped = elastic_distort(support.repeat(1, copies, 1, 1, 1), generator, 34.0, 4.0)
    return Episode(torch.cat([support, warped], 1), episode.support_y.repeat(1, 1 + copies), episode.query_x,
                   episode.query_y)


KINDS = {"none": lambda episode, generator, copies: episode,
         "affine 0.5": lambda episode, generator, copies: augment_support(episode, generator,
                                                                         SupportCopies(copies, 0.5)),
         "elastic 34": elastic_copies,
         "half pixel": lambda episode, generator, copies: moved(episode, copies, 0.5),
         "whole pixel": lambda episode, generator, copies: moved(episode, copies, 1.0)}


def rows_for(name: str, path: Path, episodes: list[Episode], ways: int, copies: int, threads: int) -> list[list]:
    _, meta, method = image_method(path, ways, 1, EVAL_QUERIES["omniglot"], "it cannot do these ways", threads=threads)
    generator = torch.Generator().manual_seed(1)
    scores = {kind: per_episode_scores(meta, method, [make(e, generator, copies) for e in episodes],
                                       method.eval_steps)[-1] for kind, make in KINDS.items()}
    rows = []
    for kind, row in scores.items():
        estimate = summarize(row)
        cell = estimate_cell(estimate.mean, estimate.ci95, "accuracy")
        if kind == "none":
            rows.append([name, kind, cell, ""])
            continue
        difference = paired_difference(row, scores["none"])
        rows.append([name, kind, cell, difference_cell(difference.mean, difference.ci95, "accuracy")])
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", metavar="NAME=CHECKPOINT")
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--part", choices=("val", "test"), default="val")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    if not 1 <= args.copies <= len(NEIGHBOURS):
        sys.exit(f"--copies must be 1 to {len(NEIGHBOURS)} (one per neighbouring position), got {args.copies}")
    named = [spec.split("=", 1) for spec in args.checkpoints]
    for spec, pair in zip(args.checkpoints, named):
        if len(pair) != 2 or not Path(pair[1]).is_file():
            sys.exit(f"{spec}: give NAME=CHECKPOINT with an existing checkpoint file")
    data, split = load_split_data("minimal", args.data_dir)
    tasks = omniglot_tasks(data, split, args.part, args.ways, 1, EVAL_QUERIES["omniglot"])
    episodes = list(fixed_episodes(tasks, args.seed, args.episodes))
    rows = [row for name, path in named for row in rows_for(name, Path(path), episodes, args.ways, args.copies,
                                                           args.threads)]
    print(markdown_table(["network", f"{args.copies} copies", f"{args.ways}-way 1-shot, {args.part}",
                          "paired vs none"], rows), end="")


if __name__ == "__main__":
    main()
