"""`metalab data fetch|info|show|render-check`: get the archives, list the splits, picture sampled episodes, check
the drawings rendered from strokes against the PNGs."""

import argparse

from metalab.data import download, paths
from metalab.data.splits import ARCHIVES_OF_SPLIT, PARTS, describe, load_split_data


def add_commands(commands) -> None:
    data = commands.add_parser("data", help="Omniglot archives, splits and episodes")
    sub = data.add_subparsers(dest="data_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="folder of the archives (default: $METALAB_DATA, else the user cache)")
    common.add_argument("--split", default="minimal", choices=sorted(ARCHIVES_OF_SPLIT))
    common.add_argument("--no-download", action="store_true", help="never download: fail if an archive is missing")

    fetch = sub.add_parser("fetch", parents=[common], help="download and verify the archives of a split")
    fetch.add_argument("--all", action="store_true", help="every known archive, not only the split's")
    fetch.set_defaults(run=run_fetch)

    info = sub.add_parser("info", parents=[common], help="print the split: alphabets, characters, images")
    info.set_defaults(run=run_info)

    show = sub.add_parser("show", parents=[common], help="write a PNG grid of sampled episodes")
    show.add_argument("--part", default="train", choices=PARTS)
    show.add_argument("--ways", type=int, default=5)
    show.add_argument("--shots", type=int, default=1)
    show.add_argument("--queries", type=int, default=2)
    show.add_argument("--tasks", type=int, default=4, help="number of episodes (rows)")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--out", default="outputs/episodes.png")
    show.set_defaults(run=run_show)

    check = sub.add_parser("render-check", parents=[common], help="IoU of drawings rendered from their strokes "
                           "against the archive's PNGs (minimal split)")
    check.add_argument("--part", default="train", choices=PARTS)
    check.add_argument("--pen-width", type=float, help="pixels of the 105x105 drawing (default: data/render.py's)")
    check.add_argument("--json", help="write the results as JSON")
    check.set_defaults(run=run_render_check)


def run_fetch(args) -> None:
    names = list(download.ARCHIVES) if args.all else list(ARCHIVES_OF_SPLIT[args.split])
    found = download.ensure_archives(names, paths.data_dir(args.data_dir), download=not args.no_download)
    for name, (path, sha256) in found.items():
        print(f"{name}: {path} (sha256 {sha256})")


def run_info(args) -> None:
    data, split = load_split_data(args.split, args.data_dir, not args.no_download)
    print(describe(split, data))


def run_show(args) -> None:
    from metalab.data.classification import omniglot_tasks
    from metalab.data.episode import generator_for
    from metalab.plots import episode_grid

    data, split = load_split_data(args.split, args.data_dir, not args.no_download)
    tasks = omniglot_tasks(data, split, args.part, args.ways, args.shots, args.queries)
    episode = tasks.sample(generator_for(args.seed, 0), args.tasks)
    print(f"wrote {episode_grid(episode, args.out)}")


def run_render_check(args) -> None:
    from metalab.data.render import PEN_WIDTH
    from metalab.data.render_check import render_iou
    from metalab.errors import MetalabError
    from metalab.json_text import write_json

    pen_width = PEN_WIDTH if args.pen_width is None else args.pen_width
    if not pen_width > 0:
        raise MetalabError(f"--pen-width must be a positive number of pixels, got {pen_width}")
    data, split = load_split_data(args.split, args.data_dir, not args.no_download)
    results = render_iou(data, split, args.part, args.data_dir, not args.no_download, pen_width)
    print(f"{results['drawings']} drawings of the {args.split} split's {args.part} part, pen width {pen_width:g}: "
          f"mean IoU {results['mean_iou_105']:.4f} at 105x105, {results['mean_iou_28']:.4f} at 28x28")
    if args.json:
        write_json(args.json, results)
