"""The official Omniglot archives the downloader knows: name, path below the base URL, published checksums.

The files come from the data set's own repository (github.com/brendenlake/omniglot, folder python/), or from
a mirror named by $METALAB_OMNIGLOT_URL with the same layout.
"""

import os
from dataclasses import dataclass

BASE_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
URL_ENV = "METALAB_OMNIGLOT_URL"  # replaces BASE_URL: a mirror with the same layout (and the tests)


def base_url() -> str:
    """The folder URL the archives are fetched from: $METALAB_OMNIGLOT_URL, else the official one."""
    return (os.environ.get(URL_ENV) or BASE_URL).rstrip("/")


@dataclass(frozen=True)
class ArchiveSpec:
    """One archive: its name, its path below the base URL, and its published checksums.

    A checksum of None means none is published for that file. It is stored locally as `<name>.zip`.
    """

    name: str
    path: str
    md5: str | None
    sha256: str | None

    @property
    def filename(self) -> str:
        return f"{self.name}.zip"

    @property
    def url(self) -> str:
        # Built on each use, so that $METALAB_OMNIGLOT_URL set after import still takes effect.
        return f"{base_url()}/{self.path}"


ARCHIVES: dict[str, ArchiveSpec] = {spec.name: spec for spec in (
    # Full background (30 alphabets) and evaluation (20 alphabets) sets. We hold no copy of these, so
    # only the md5 that torchvision publishes (pytorch/vision, torchvision/datasets/omniglot.py,
    # Omniglot.zips_md5) is verified; no sha256 is pinned.
    ArchiveSpec("images_background", "images_background.zip", "68d2efa1b9178cc56df9314c21c6e718", None),
    ArchiveSpec("images_evaluation", "images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811", None),
    # The two minimal background sets (5 alphabets each): both digests checked against our own copies.
    ArchiveSpec("images_background_small1", "images_background_small1.zip",
                "e704a628b5459e08445c13499850abc4",
                "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4"),
    ArchiveSpec("images_background_small2", "images_background_small2.zip",
                "b75a71a51d3b13f821f212756fe481fd",
                "3ccaa407515a8778e5d0861875af38b17e418f301ad5bb3b5a6b65d901a41c7f"),
    # The pen trajectories behind the drawings of the two minimal sets (data/strokes.py): both digests checked
    # against our own copies.
    ArchiveSpec("strokes_background_small1", "strokes_background_small1.zip",
                "830eb54f8a9297820a4471fcc4f9d9bc",
                "8cb3960fb6cf4ccf5f064ad83169f828c36c36782a0f6e7faacb7ecfae4468a2"),
    ArchiveSpec("strokes_background_small2", "strokes_background_small2.zip",
                "84d9defc54b809861ffd9886798dcffb",
                "345bf2141efbea062833dbb2828abbc23d9e07825e46f2afdd4daecddfed6e78"),
    # Lake et al.'s 20 runs of 20-way one-shot classification. Only a published md5 is verified (from
    # jonhare/DifferentiableSketching, dsketch/experiments/classifiers/evaluate_one_shot.py; another
    # public loader publishes the same value); no sha256 is pinned.
    ArchiveSpec("all_runs", "one-shot-classification/all_runs.zip", "e8996daecdf12afeeb4a53a179f06b19", None),
)}
