"""Omniglot's pen trajectories (strokes_background_small1/2.zip): the strokes behind every drawing.

Each drawing's file `<stem>/<Alphabet>/characterNN/<id>_<drawer>.txt` holds a `START` line, then one
`x,y,t` line per pen sample (pixels of the 105x105 drawing, t in milliseconds), with a `BREAK` line at each
pen-up. The sampling is raw, non-uniform in space and time (data/render.py interpolates it). macOS metadata
(`__MACOSX/`, `.DS_Store`) is skipped.

The strokes of meta-validation and meta-test characters are held-out data: load_strokes hands them out only
when asked for evaluation, so that training code can never read them by accident.
"""

import re
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from metalab.data import download, paths
from metalab.data.archives import ARCHIVES
from metalab.data.omniglot import Omniglot
from metalab.data.splits import Split
from metalab.errors import MetalabError

# The strokes archive behind each image archive that has one.
STROKES_OF = {"images_background_small1": "strokes_background_small1",
              "images_background_small2": "strokes_background_small2"}
_MEMBER = re.compile(r"^(?P<stem>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>character\d+)/"
                     r"(?P<file>\d+_(?P<drawer>\d+))\.txt$")


@dataclass(frozen=True)
class StrokeDrawing:
    """One drawing as its strokes: each stroke float64 [P, 3] of (x, y, t), in the order drawn."""

    character: str  # "Alphabet/characterNN", as Omniglot.characters
    drawer: int  # 1..20
    file: str  # "<id>_<drawer>", the stem its PNG shares
    strokes: tuple[np.ndarray, ...]


def parse_strokes(text: str, source: str) -> tuple[np.ndarray, ...]:
    """The strokes of one file's text, each float64 [P, 3]; empty strokes (two BREAKs in a row) are dropped."""
    strokes, current = [], []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line in ("START", "BREAK", ""):
            if current:
                strokes.append(np.array(current, dtype=np.float64))
            current = []
            continue
        try:
            x, y, t = (float(v) for v in line.split(","))
        except ValueError:
            raise MetalabError(f"{source}, line {number}: {line[:40]!r} is not 'x,y,t' nor START/BREAK; this is not "
                               "an official Omniglot strokes file (`metalab data fetch` downloads them)") from None
        current.append((x, y, t))
    if current:
        strokes.append(np.array(current, dtype=np.float64))
    if not strokes:
        raise MetalabError(f"{source} holds no pen samples; this is not an official Omniglot strokes file")
    return tuple(strokes)


def read_strokes_archive(path, characters: set[str]) -> list[StrokeDrawing]:
    """The drawings of the named characters ("Alphabet/characterNN") in one strokes archive, sorted by
    (character, drawer); files of other characters are not even parsed."""
    drawings = []
    try:
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                if member.startswith("__MACOSX/") or not member.endswith(".txt"):
                    continue  # folders, .DS_Store and macOS resource forks
                match = _MEMBER.match(member)
                if match is None:
                    raise MetalabError(f"{path}: unexpected entry {member!r}; a strokes archive holds "
                                       "<stem>/<Alphabet>/characterNN/<id>_<drawer>.txt")
                character = f"{match['alphabet']}/{match['character']}"
                if character in characters:
                    text = archive.read(member).decode("ascii")
                    drawings.append(StrokeDrawing(character, int(match["drawer"]), match["file"],
                                                  parse_strokes(text, f"{path}:{member}")))
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, UnicodeDecodeError) as error:
        raise MetalabError(f"{path} is corrupt or truncated ({error}); delete it and run `metalab data fetch`") \
            from error
    return sorted(drawings, key=lambda d: (d.character, d.drawer))


def load_strokes(data: Omniglot, split: Split, part: str, data_dir=None, download_missing: bool = True,
                 evaluation: bool = False) -> list[StrokeDrawing]:
    """The strokes of every drawing of one part's characters, sorted by (character, drawer).

    Meta-train strokes serve training; those of "val" and "test" only with evaluation=True (held-out data).
    """
    characters = split.part(part)
    if part != "train" and not evaluation:
        raise MetalabError(f"the strokes of the meta-{part} characters are held-out data and never serve training; "
                           "load the train part's, or pass evaluation=True only to evaluate on them")
    wanted = {data.characters[c] for c in characters}
    drawings: dict[tuple[str, int], StrokeDrawing] = {}
    for images in sorted({a for c in characters for a in data.archives[c]}):
        if images not in STROKES_OF:
            raise MetalabError(f"no strokes archive is known for {images}; strokes exist here for the minimal "
                               "split (strokes_background_small1/2.zip)")
        path, _ = download.ensure_archives([STROKES_OF[images]], paths.data_dir(data_dir),
                                           download=download_missing)[STROKES_OF[images]]
        for drawing in read_strokes_archive(path, wanted):
            drawings.setdefault((drawing.character, drawing.drawer), drawing)  # Greek and Latin are in both
    return [drawings[key] for key in sorted(drawings)]


def ensure_train_strokes(data: Omniglot, split: Split, data_dir, download_missing: bool, option: str) -> None:
    """The strokes archives of the meta-train characters are in the data folder (fetched if allowed), or a
    one-line MetalabError naming them and the `option` that reads them."""
    names = sorted({STROKES_OF[a] for c in split.train for a in data.archives[c] if a in STROKES_OF})
    folder = paths.data_dir(data_dir)
    missing = [name for name in names if not (folder / ARCHIVES[name].filename).exists()]
    try:
        download.ensure_archives(names, folder, download=download_missing)
    except MetalabError as error:
        if not missing:
            raise  # there but not the official file: its own message says so
        files = " and ".join(f"{ARCHIVES[n].filename} ({ARCHIVES[n].url})" for n in missing)
        one = len(missing) == 1
        raise MetalabError(f"{option} reads the strokes of the meta-train drawings, but {files} "
                           f"{'is' if one else 'are'} not in {folder} and could not be fetched: run `metalab data "
                           f"fetch --all`, or download {'it' if one else 'them'} there yourself") from error
