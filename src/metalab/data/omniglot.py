"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015) as one uint8 array of small images plus an index.

Each official archive is decoded once into a cache file keyed by the archive's sha256 and the
preprocessing settings; later loads only read that file. Images are shrunk from 105x105 with an
antialiasing filter and inverted so that ink is the high value (255) on a zero background.
"""

import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import filelock
import numpy as np
from PIL import Image

from metalab.atomic import atomic_path, remove_stale_temporaries
from metalab.data import download, paths
from metalab.data.affine import affine_drawing, check_affine
from metalab.errors import MetalabError

SOURCE_SIZE = 105
# Bump when the decoding below changes in a way that changes the arrays: old caches are then ignored.
CACHE_FORMAT = 1
_RESAMPLE = {"lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX,
             "bilinear": Image.Resampling.BILINEAR}
_MEMBER = re.compile(r"^(?P<stem>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>character\d+)/\d+_(?P<drawer>\d+)\.png$")


@dataclass(frozen=True)
class Preprocessing:
    """How a 105x105 drawing becomes a small image."""

    size: int = 28
    resample: str = "lanczos"  # antialiasing filter for the downscale: lanczos, box or bilinear
    # An affine distortion of the 105x105 drawing before the downscale (data/affine.py), for extrapolation tests.
    shear: float = 0.0  # radians
    scale: float = 1.0

    def __post_init__(self):
        check_affine(self.shear, self.scale)
        if self.size <= 0:
            raise MetalabError(f"image size must be positive, got {self.size}")
        if self.resample not in _RESAMPLE:
            raise MetalabError(f"unknown resample filter {self.resample!r}; choose one of {sorted(_RESAMPLE)}")

    def key(self) -> str:
        # Undistorted drawings keep the key they always had, so existing caches stay valid.
        affine = "" if (self.shear, self.scale) == (0, 1) else f"-shear{self.shear!r}-scale{self.scale!r}"
        return f"s{self.size}-{self.resample}{affine}-v{CACHE_FORMAT}"


def preprocess_image(image: Image.Image, settings: Preprocessing, source: str) -> np.ndarray:
    """One Omniglot drawing (105x105, ink dark) -> uint8 [size, size], ink high."""
    if image.size != (SOURCE_SIZE, SOURCE_SIZE):
        raise MetalabError(
            f"{source}: image is {image.size[0]}x{image.size[1]}, but Omniglot drawings are "
            f"{SOURCE_SIZE}x{SOURCE_SIZE}; this is not an official Omniglot file: replace it with the "
            "original (`metalab data fetch` downloads the official archives)")
    grey = affine_drawing(image, settings.shear, settings.scale)
    grey = grey.resize((settings.size, settings.size), _RESAMPLE[settings.resample])
    return 255 - np.asarray(grey, dtype=np.uint8)


@dataclass(frozen=True)
class Omniglot:
    """Decoded drawings of one or more archives, deduplicated.

    images:     uint8 [M, size, size], ink high
    character:  int64 [M], index into `characters`
    drawer:     int64 [M], the drawer 1..20 who drew it
    characters: names "Alphabet/characterNN", sorted
    archives:   for each character, the archives that contain it
    """

    images: np.ndarray
    character: np.ndarray
    drawer: np.ndarray
    characters: tuple[str, ...]
    archives: tuple[frozenset[str], ...]

    def alphabet_of(self, character: int) -> str:
        return self.characters[character].split("/")[0]


def load_omniglot(archive_names: Sequence[str], data_dir=None, download_missing: bool = True,
                  settings: Preprocessing = Preprocessing()) -> Omniglot:
    """Load (building the cache once) and merge the named archives, e.g. ["images_background_small1", ...].

    Drawings present in several archives (Greek and Latin are in both minimal archives) are kept once;
    a drawing whose copies differ is an error.
    """
    found = download.ensure_archives(archive_names, paths.data_dir(data_dir), download=download_missing)
    parts = [(name, _load_archive(name, *found[name], settings)) for name in archive_names]
    return _merge(parts)


def _merge(parts) -> Omniglot:
    images = np.concatenate([p["images"] for _, p in parts])
    names = np.concatenate([p["character"] for _, p in parts])
    drawers = np.concatenate([p["drawer"] for _, p in parts]).astype(np.int64)
    origin = np.concatenate([np.full(len(p["drawer"]), name) for name, p in parts])
    characters, character = np.unique(names, return_inverse=True)
    key = character * 1000 + drawers
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    copies_differ = np.any(images != images[first[inverse]], axis=(1, 2))
    if copies_differ.any():
        i = int(np.flatnonzero(copies_differ)[0])
        raise MetalabError(
            f"drawing {characters[character[i]]} by drawer {drawers[i]} differs between archives "
            f"{origin[i]} and {origin[first[inverse[i]]]}; one of them is not an official archive: "
            "delete it and run `metalab data fetch`")
    archives = [set() for _ in characters]
    for c, name in zip(character, origin):
        archives[c].add(str(name))
    order = first[np.lexsort((drawers[first], character[first]))]
    return Omniglot(images=images[order], character=character[order].astype(np.int64), drawer=drawers[order],
                    characters=tuple(str(c) for c in characters), archives=tuple(frozenset(a) for a in archives))


def _load_archive(name: str, path: Path, sha256: str, settings: Preprocessing) -> dict:
    """The decoded arrays of one archive, from the cache, building it first if needed."""
    cache = paths.cache_dir() / f"omniglot-{name}-{sha256[:16]}-{settings.key()}.npz"
    expected = _drawings_in(path)
    arrays = _read_cache(cache, settings, expected)
    if arrays is None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            # Two processes may start at once: one builds, the other waits and then reads its result.
            lock = filelock.FileLock(str(cache) + ".lock")
            lock.acquire()
        except OSError as error:
            raise MetalabError(f"cannot write the data cache {cache.parent} ({error.strerror or error}); point "
                               "METALAB_CACHE to a folder you can write to") from error
        try:
            remove_stale_temporaries(cache.parent, prefix=cache.name)  # of builders killed mid-write
            arrays = _read_cache(cache, settings, expected)
            if arrays is None:
                arrays = _decode_archive(name, path, settings)
                _remove_folder_in_the_way(cache)
                with atomic_path(cache) as tmp:
                    with open(tmp, "wb") as f:
                        np.savez(f, **arrays)
        finally:
            lock.release()
    return arrays


_CACHED = ("images", "character", "drawer")


def _read_cache(cache: Path, settings: Preprocessing, expected: int | None) -> dict | None:
    """The arrays of a cache file; None when it is absent, unreadable or not what this archive decodes to
    (damaged: it is then rebuilt). `expected`: the archive's number of drawings (None: unknown)."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in _CACHED}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error):
        return None
    images, character, drawer = (arrays[k] for k in _CACHED)
    count = len(images) if images.ndim else -1
    sound = (images.dtype == np.uint8 and images.shape[1:] == (settings.size, settings.size) and count > 0
             and character.shape == (count,) and character.dtype.kind == "U" and drawer.shape == (count,)
             and drawer.dtype.kind in "iu" and (expected is None or count == expected))
    return arrays if sound else None


def _drawings_in(path: Path) -> int | None:
    """The number of drawings (.png members) of an archive; None when it cannot be read (decoding says why)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(member.endswith(".png") for member in archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return None


def _remove_folder_in_the_way(cache: Path) -> None:
    """An empty folder where the cache file goes is removed; a non-empty one is the user's to move."""
    if cache.is_dir():
        try:
            cache.rmdir()
        except OSError as error:
            raise MetalabError(f"{cache} is a folder with files where the data cache file goes; move it away "
                               "(or point METALAB_CACHE elsewhere)") from error


def _decode_archive(name: str, path: Path, settings: Preprocessing) -> dict:
    images, characters, drawers = [], [], []
    try:
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                if not member.endswith(".png"):
                    continue
                match = _MEMBER.match(member)
                if match is None or match["stem"] != name:
                    raise MetalabError(
                        f"{path}: unexpected entry {member!r}; an Omniglot archive {name}.zip holds "
                        f"{name}/<Alphabet>/characterNN/<id>_<drawer>.png. Replace the file with the "
                        "official archive (`metalab data fetch`)")
                with Image.open(io.BytesIO(archive.read(member))) as image:
                    images.append(preprocess_image(image, settings, f"{path}:{member}"))
                characters.append(f"{match['alphabet']}/{match['character']}")
                drawers.append(int(match["drawer"]))
    # zipfile raises NotImplementedError (a RuntimeError) for a damaged compression method or version
    # field and RuntimeError for a damaged encryption flag; PIL raises SyntaxError for a broken PNG.
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, SyntaxError) as error:
        raise MetalabError(
            f"{path} is corrupt or truncated ({error}); delete it and run `metalab data fetch` "
            "to download it again") from error
    if not images:
        raise MetalabError(f"{path} holds no Omniglot drawings; delete it and run `metalab data fetch` "
                           "to download the official archive")
    return {"images": np.stack(images), "character": np.array(characters), "drawer": np.array(drawers, np.int16)}
