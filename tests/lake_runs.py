"""A small copy of Lake's all_runs.zip, built from real Omniglot drawings, for the tests of its reader and of
`metalab eval --benchmark lake`.

It follows all_runs.zip exactly (runNN/training/classKK.png, runNN/test/itemMM.png, runNN/class_labels.txt) with
3 runs, each 20 characters of one alphabet: one drawer's drawing as the class image, another drawer's as the test
item, test items in shuffled order.
"""

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

SOURCE = "images_background_small2"
ALPHABETS = ("Greek", "Latin", "Sanskrit")  # each has at least 20 characters in the source archive
MEMBER = re.compile(r"^[^/]+/(?P<alphabet>[^/]+)/(?P<character>character\d+)/\d+_(?P<drawer>\d+)\.png$")


def _source_zip() -> Path:
    folder = Path(os.environ["METALAB_DATA"]) if os.environ.get("METALAB_DATA") else \
        Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"
    path = folder / f"{SOURCE}.zip"
    if not path.is_file():
        pytest.skip(f"{path} is absent: the fixture is built from the real Omniglot drawings "
                    "(set METALAB_DATA to the folder holding images_background_small2.zip)")
    return path


def write_lake_runs(root: Path) -> dict:
    """The fixture written under `root` as a folder (all_runs/), a zip with one top folder (all_runs.zip) and a flat
    zip (flat.zip), plus what it wrote: labels [runs, 20] (item m shows class labels[r, m]) and the PNG bytes of
    every class image and test item. Skips the test when the source archive is absent."""
    source = _source_zip()
    folder = root / "all_runs"
    expected = {"labels": [], "classes": [], "items": []}  # per run: labels [20]; source PNG bytes per class/item
    with zipfile.ZipFile(source) as archive:
        index = {}
        for name in archive.namelist():
            match = MEMBER.match(name)
            if match:
                index.setdefault((match["alphabet"], match["character"]), {})[int(match["drawer"])] = name
        for r, alphabet in enumerate(ALPHABETS, start=1):
            rng = np.random.default_rng(100 + r)
            characters = sorted(c for a, c in index if a == alphabet)
            chosen = rng.choice(characters, size=20, replace=False)
            train_drawer, test_drawer = (int(d) for d in rng.choice(np.arange(1, 21), size=2, replace=False))
            order = rng.permutation(20)  # item m shows class order[m]
            run = folder / f"run{r:02d}"
            (run / "training").mkdir(parents=True)
            (run / "test").mkdir()
            classes = [archive.read(index[(alphabet, c)][train_drawer]) for c in chosen]
            items = [archive.read(index[(alphabet, chosen[k])][test_drawer]) for k in order]
            for k, data in enumerate(classes, start=1):
                (run / "training" / f"class{k:02d}.png").write_bytes(data)
            for m, data in enumerate(items, start=1):
                (run / "test" / f"item{m:02d}.png").write_bytes(data)
            lines = [f"run{r:02d}/test/item{m + 1:02d}.png run{r:02d}/training/class{k + 1:02d}.png"
                     for m, k in enumerate(order)]
            (run / "class_labels.txt").write_text("\n".join(lines) + "\n")
            expected["labels"].append(order.astype(np.int64))
            expected["classes"].append(classes)
            expected["items"].append(items)
    nested, flat = root / "all_runs.zip", root / "flat.zip"
    for path, prefix in ((nested, "all_runs/"), (flat, "")):
        with zipfile.ZipFile(path, "w") as out:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    out.write(file, prefix + file.relative_to(folder).as_posix())
    return {"folder": folder, "nested": nested, "flat": flat, "root": root,
            "labels": np.stack(expected["labels"]), "classes": expected["classes"], "items": expected["items"]}
