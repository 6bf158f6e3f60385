"""Omniglot decoding, deduplication and the preprocessed cache, on the real minimal archives.

Doctored archives (corrupt, truncated, wrong content, a drawing that differs between archives) are
built in tmp_path from the real ones. Those cannot pass the downloader's checksums, so the layers
below it (`_load_archive`, `_decode_archive`, `_merge`) are also exercised directly.
"""

import hashlib
import io
import multiprocessing
import os
import queue
import random
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalab.data import omniglot
from metalab.data.omniglot import (
    CACHE_FORMAT,
    Omniglot,
    Preprocessing,
    load_omniglot,
    preprocess_image,
)
from metalab.errors import MetalabError

SMALL1, SMALL2 = "images_background_small1", "images_background_small2"
MEMBER = re.compile(r"^(?P<stem>[^/]+)/(?P<alphabet>[^/]+)/(?P<character>character\d+)/\d+_(?P<drawer>\d+)\.png$")
FIX = "metalab data fetch"


# ----------------------------------------------------------------------------------------- helpers

def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def array_digest(data: Omniglot) -> str:
    h = hashlib.sha256()
    for part in (data.images, data.character, data.drawer, np.array(data.characters)):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def subset_archive(source: Path, dest: Path, keep, transform=None) -> Path:
    """Copy the entries of `source` whose name satisfies keep(name) into `dest` (same names and
    compression); transform(name, bytes) -> bytes may alter a member on the way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            if keep(info.filename):
                payload = src.read(info.filename)
                if transform is not None:
                    payload = transform(info.filename, payload)
                out.writestr(info, payload)
    return dest


def one_character(source: Path, dest: Path, character: str) -> Path:
    """A small archive: the directory entries plus the 20 drawings of one character."""
    return subset_archive(source, dest, lambda n: n.endswith("/") or f"/{character}/" in n)


def mirrored_png(payload: bytes) -> bytes:
    with Image.open(io.BytesIO(payload)) as image:
        flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out = io.BytesIO()
        flipped.save(out, format="PNG")
    return out.getvalue()


def cache_files(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir() if not p.name.endswith(".lock"))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("METALAB_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def small_archive(omniglot_dir, tmp_path_factory):
    """One character of small1 (20 drawings) under the official name, for fast cache mechanics."""
    folder = tmp_path_factory.mktemp("one-character")
    return one_character(omniglot_dir / f"{SMALL1}.zip", folder / f"{SMALL1}.zip", "Balinese/character01")


# ------------------------------------------------------------------------------- counts and format

def test_raw_archives_hold_the_documented_numbers_of_drawings(omniglot_dir):
    counts = {}
    for name in (SMALL1, SMALL2):
        with zipfile.ZipFile(omniglot_dir / f"{name}.zip") as archive:
            counts[name] = sum(n.endswith(".png") for n in archive.namelist())
    assert counts == {SMALL1: 2720, SMALL2: 3120}


def test_merged_minimal_data_is_deduplicated(minimal):
    data, _ = minimal
    assert len(data.characters) == 242
    assert data.images.shape == (4840, 28, 28) and data.images.dtype == np.uint8
    assert data.character.shape == data.drawer.shape == (4840,)
    assert data.character.dtype == data.drawer.dtype == np.int64
    assert list(data.characters) == sorted(data.characters) and len(set(data.characters)) == 242
    # every character has drawers 1..20 exactly once, and rows are sorted by (character, drawer)
    pairs = data.character * 100 + data.drawer
    assert np.all(np.diff(pairs) > 0)
    assert np.array_equal(np.bincount(data.character), np.full(242, 20))
    assert set(data.drawer.tolist()) == set(range(1, 21))
    # Greek and Latin come from both archives, everything else from exactly one
    alphabets = {data.alphabet_of(c) for c in range(242)}
    assert len(alphabets) == 8
    for c in range(242):
        if data.alphabet_of(c) in ("Greek", "Latin"):
            assert data.archives[c] == frozenset({SMALL1, SMALL2})
        else:
            assert len(data.archives[c]) == 1
    assert sum(SMALL1 in a for a in data.archives) == 136
    assert sum(SMALL2 in a for a in data.archives) == 156


def _member_index(archive: zipfile.ZipFile) -> dict:
    index = {}
    for name in archive.namelist():
        match = MEMBER.match(name)
        if match:
            index[(f"{match['alphabet']}/{match['character']}", int(match["drawer"]))] = name
    return index


def _ink_nearby(ink: np.ndarray, radius: int) -> np.ndarray:
    """[28, 28]: whether the 105x105 drawing has ink within `radius` source pixels of each pixel centre."""
    padded = np.pad(ink, radius + 1)
    centres = ((np.arange(28) + 0.5) * 105 / 28).astype(int) + radius + 1
    return np.array([[padded[i - radius:i + radius + 1, j - radius:j + radius + 1].any() for j in centres]
                     for i in centres])


def test_images_equal_preprocessing_of_the_png_read_independently(minimal, omniglot_dir):
    data, _ = minimal
    rng = np.random.default_rng(0)
    rows = rng.choice(len(data.images), size=60, replace=False)
    archives = {name: zipfile.ZipFile(omniglot_dir / f"{name}.zip") for name in (SMALL1, SMALL2)}
    try:
        members = {name: _member_index(a) for name, a in archives.items()}
        for row in rows:
            key = (data.characters[data.character[row]], int(data.drawer[row]))
            for name in sorted(data.archives[data.character[row]]):  # every copy, for Greek/Latin both
                payload = archives[name].read(members[name][key])
                with Image.open(io.BytesIO(payload)) as image:
                    assert image.size == (105, 105)
                    expected = preprocess_image(image, Preprocessing(), "test")
                    ink = np.asarray(image.convert("L"), dtype=np.float64) < 128  # drawings are dark on white
                got = data.images[row]
                assert np.array_equal(got, expected), key
                # Ink is high and the background 0, judged against the raw drawing itself: a pixel
                # with no ink within the filter's reach (12 source pixels) is exactly 0 ...
                assert np.all(got[~_ink_nearby(ink, 12)] == 0), key
                # ... and the image follows the ink density of the drawing (block means, 105 -> 28)
                density = ink.repeat(4, 0).repeat(4, 1).reshape(28, 15, 28, 15).mean(axis=(1, 3))
                assert np.corrcoef(density.ravel(), got.ravel().astype(np.float64))[0, 1] > 0.9, key
    finally:
        for archive in archives.values():
            archive.close()
    assert np.median(data.images) == 0 and data.images.max() == 255


def test_preprocessing_settings_are_validated():
    with pytest.raises(MetalabError, match="positive"):
        Preprocessing(size=0)
    with pytest.raises(MetalabError, match="resample"):
        Preprocessing(resample="nearest")


def test_a_drawing_of_the_wrong_size_is_rejected_with_the_fix():
    with pytest.raises(MetalabError, match=r"somewhere\.png.*64x64.*metalab data fetch"):
        preprocess_image(Image.new("1", (64, 64), 1), Preprocessing(), "somewhere.png")


# ------------------------------------------------------------------------------------------ dedup

@pytest.fixture(scope="module")
def small1_part(minimal, omniglot_dir):
    """The cached arrays of the real small1 archive (built by the `minimal` fixture)."""
    path = omniglot_dir / f"{SMALL1}.zip"
    return omniglot._load_archive(SMALL1, path, sha256_of(path), Preprocessing())


def _greek_of_small2(omniglot_dir, dest, transform=None):
    return subset_archive(omniglot_dir / f"{SMALL2}.zip", dest,
                          lambda n: n.endswith("/") and "/" not in n[:-1] or f"{SMALL2}/Greek/" in n, transform)


def test_identical_copies_are_kept_once(minimal, small1_part, omniglot_dir, tmp_path):
    path = _greek_of_small2(omniglot_dir, tmp_path / f"{SMALL2}.zip")
    greek2 = omniglot._load_archive(SMALL2, path, sha256_of(path), Preprocessing())
    merged = omniglot._merge([(SMALL1, small1_part), (SMALL2, greek2)])
    assert len(merged.images) == 2720 and len(merged.characters) == 136
    greek = [c for c in range(136) if merged.alphabet_of(c) == "Greek"]
    assert len(greek) == 24 and all(merged.archives[c] == {SMALL1, SMALL2} for c in greek)
    assert all(merged.archives[c] == {SMALL1} for c in range(136) if c not in greek)
    # the merged minimal data holds the very same pixels for those characters
    data, _ = minimal
    ids = [data.characters.index(merged.characters[c]) for c in range(136)]
    assert np.array_equal(merged.images, data.images[np.isin(data.character, ids)])


def test_a_drawing_whose_copies_differ_is_an_error(small1_part, omniglot_dir, tmp_path):
    victim = "Greek/character05/"

    def doctor(name, payload):
        return mirrored_png(payload) if victim in name and name.endswith("_07.png") else payload

    path = _greek_of_small2(omniglot_dir, tmp_path / f"{SMALL2}.zip", doctor)
    greek2 = omniglot._load_archive(SMALL2, path, sha256_of(path), Preprocessing())
    with pytest.raises(MetalabError) as error:
        omniglot._merge([(SMALL1, small1_part), (SMALL2, greek2)])
    message = str(error.value)
    assert "Greek/character05" in message and "drawer 7" in message
    assert SMALL1 in message and SMALL2 in message and FIX in message


# ------------------------------------------------------------------------------------------ cache

def test_second_load_reads_the_cache(fresh_cache, omniglot_dir, monkeypatch):
    first = load_omniglot([SMALL1], omniglot_dir, download_missing=False)
    sha = sha256_of(omniglot_dir / f"{SMALL1}.zip")
    expected = f"omniglot-{SMALL1}-{sha[:16]}-s28-lanczos-v{CACHE_FORMAT}.npz"
    assert cache_files(fresh_cache) == [expected]

    def no_decoding(*args, **kwargs):
        raise AssertionError("the archive was decoded again although its cache exists")

    monkeypatch.setattr(omniglot, "_decode_archive", no_decoding)
    monkeypatch.setattr(omniglot, "preprocess_image", no_decoding)
    second = load_omniglot([SMALL1], omniglot_dir, download_missing=False)
    assert array_digest(first) == array_digest(second)
    assert first.archives == second.archives
    assert cache_files(fresh_cache) == [expected]


def test_cache_key_changes_with_settings_and_archive(fresh_cache, small_archive, omniglot_dir):
    sha = sha256_of(small_archive)
    default = omniglot._load_archive(SMALL1, small_archive, sha, Preprocessing())
    small = omniglot._load_archive(SMALL1, small_archive, sha, Preprocessing(size=14))
    box = omniglot._load_archive(SMALL1, small_archive, sha, Preprocessing(resample="box"))
    files = cache_files(fresh_cache)
    assert len(files) == 3
    assert all(sha[:16] in f for f in files)
    assert {Preprocessing().key(), Preprocessing(size=14).key(), Preprocessing(resample="box").key()} == {
        re.search(r"-(s\d+-\w+-v\d+)\.npz$", f)[1] for f in files}
    assert default["images"].shape == (20, 28, 28) and small["images"].shape == (20, 14, 14)
    assert not np.array_equal(default["images"], box["images"])
    # another archive under the same name (a different sha256) gets its own cache file
    other = one_character(omniglot_dir / f"{SMALL1}.zip", small_archive.parent / "other" / f"{SMALL1}.zip",
                          "Korean/character01")
    korean = omniglot._load_archive(SMALL1, other, sha256_of(other), Preprocessing())
    assert len(cache_files(fresh_cache)) == 4
    assert set(korean["character"].tolist()) == {"Korean/character01"}


def test_unrelated_cache_files_are_never_used(fresh_cache, small_archive):
    sha = sha256_of(small_archive)
    reference = omniglot._decode_archive(SMALL1, small_archive, Preprocessing())
    fresh_cache.mkdir()
    key = f"omniglot-{SMALL1}-{sha[:16]}-s28-lanczos"
    strangers = {
        f"{key}-v{CACHE_FORMAT + 1}.npz": b"not an npz at all",
        f"{key}-v{CACHE_FORMAT - 1}.npz": None,  # a valid npz of wrong content: an old format version
        f"omniglot-{SMALL1}-{'0' * 16}-s28-lanczos-v{CACHE_FORMAT}.npz": None,  # another archive
        f"omniglot-{SMALL1}-{sha[:16]}-s28-box-v{CACHE_FORMAT}.npz": b"\x00" * 100,  # other settings
    }
    # Half-written by a killed builder: removed by the next one, which holds the build lock (issue 17, defect 7).
    stale = fresh_cache / f".{key}-v{CACHE_FORMAT}.npz.abcd1234.tmp"
    for name, payload in strangers.items():
        if payload is None:
            buffer = io.BytesIO()
            np.savez(buffer, images=np.full((3, 28, 28), 7, np.uint8), character=np.array(["X/character01"] * 3),
                     drawer=np.array([1, 2, 3], np.int16))
            payload = buffer.getvalue()
            strangers[name] = payload
        (fresh_cache / name).write_bytes(payload)
    stale.write_bytes(b"PK\x03\x04 half-written by a killed process")
    got = omniglot._load_archive(SMALL1, small_archive, sha, Preprocessing())
    for k in ("images", "character", "drawer"):
        assert np.array_equal(got[k], reference[k])
    for name, payload in strangers.items():  # untouched
        assert (fresh_cache / name).read_bytes() == payload
    assert not stale.exists()


@pytest.mark.parametrize("damage", ["empty", "garbage", "truncated", "missing-array"])
def test_a_damaged_cache_file_is_rebuilt(fresh_cache, small_archive, damage):
    sha = sha256_of(small_archive)
    reference = omniglot._load_archive(SMALL1, small_archive, sha, Preprocessing())
    (cache,) = [p for p in fresh_cache.iterdir() if p.suffix == ".npz"]
    if damage == "empty":
        cache.write_bytes(b"")
    elif damage == "garbage":
        cache.write_bytes(b"\x93NUMPY but not really" * 10)
    elif damage == "truncated":
        cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    else:
        with open(cache, "wb") as f:
            np.savez(f, images=reference["images"])
    got = omniglot._load_archive(SMALL1, small_archive, sha, Preprocessing())
    for k in ("images", "character", "drawer"):
        assert np.array_equal(got[k], reference[k])
    with np.load(cache) as npz:  # and the file itself was replaced by a good one
        assert np.array_equal(npz["images"], reference["images"])


class Crash(Exception):
    pass


def test_a_crash_while_decoding_leaves_no_cache_file(fresh_cache, small_archive, monkeypatch):
    calls = []
    real = omniglot.preprocess_image

    def crash_after_five(*args):
        calls.append(1)
        if len(calls) > 5:
            raise Crash()
        return real(*args)

    monkeypatch.setattr(omniglot, "preprocess_image", crash_after_five)
    with pytest.raises(Crash):
        omniglot._load_archive(SMALL1, small_archive, sha256_of(small_archive), Preprocessing())
    assert cache_files(fresh_cache) == []
    monkeypatch.setattr(omniglot, "preprocess_image", real)
    assert omniglot._load_archive(SMALL1, small_archive, sha256_of(small_archive), Preprocessing())["images"].shape == (
        20, 28, 28)


def test_a_crash_while_writing_leaves_no_cache_file(fresh_cache, small_archive, monkeypatch):
    def half_write(file, **arrays):
        file.write(b"PK\x03\x04" + b"\x00" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(omniglot.np, "savez", half_write)
    with pytest.raises((OSError, MetalabError)):
        omniglot._load_archive(SMALL1, small_archive, sha256_of(small_archive), Preprocessing())
    assert cache_files(fresh_cache) == []  # neither the final file nor the temporary one


def _build_in_child(cache: str, data_dir: str, barrier, results) -> None:
    """Spawned: load small1 into `cache` once the sibling is ready too; report (decodes, digest)."""
    os.environ["METALAB_CACHE"] = cache
    from metalab.data import omniglot as module

    calls = []
    real = module._decode_archive

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    module._decode_archive = counting
    barrier.wait(timeout=60)
    data = module.load_omniglot([SMALL1], data_dir, download_missing=False)
    results.put((len(calls), array_digest(data)))


def test_concurrent_builds_from_two_processes_yield_one_valid_cache(fresh_cache, omniglot_dir, minimal):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    children = [context.Process(target=_build_in_child, args=(str(fresh_cache), str(omniglot_dir), barrier, results))
                for _ in range(2)]
    for child in children:
        child.start()
    reports = []
    try:
        while len(reports) < 2:
            try:
                reports.append(results.get(timeout=1))
            except queue.Empty:
                assert any(child.is_alive() for child in children), "a child died before reporting"
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
    assert all(child.exitcode == 0 for child in children)
    assert sum(decodes for decodes, _ in reports) == 1  # one built, the other waited and read it
    assert reports[0][1] == reports[1][1]
    sha = sha256_of(omniglot_dir / f"{SMALL1}.zip")
    assert cache_files(fresh_cache) == [f"omniglot-{SMALL1}-{sha[:16]}-s28-lanczos-v{CACHE_FORMAT}.npz"]
    here = load_omniglot([SMALL1], omniglot_dir, download_missing=False)
    assert array_digest(here) == reports[0][1]
    data, _ = minimal
    ids = [data.characters.index(name) for name in here.characters]
    assert np.array_equal(here.images, data.images[np.isin(data.character, ids)])


# ---------------------------------------------------------------------- corrupt and wrong archives

def _assert_names_file_and_fix(error, path: Path):
    message = str(error.value)
    assert str(path) in message or path.name in message, message
    assert FIX in message, message


@pytest.fixture
def data_dir_with(tmp_path, omniglot_dir):
    """A data folder holding the real small1 and, as small2, whatever bytes the test gives."""
    def make(small2: bytes) -> Path:
        folder = tmp_path / "data"
        folder.mkdir()
        (folder / f"{SMALL1}.zip").write_bytes((omniglot_dir / f"{SMALL1}.zip").read_bytes())
        (folder / f"{SMALL2}.zip").write_bytes(small2)
        return folder
    return make


def _other_content_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "holiday photos")
        archive.writestr("photos/beach.png", b"\x89PNG\r\n\x1a\n")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["truncated", "flipped", "other-content", "empty"])
def test_load_rejects_a_damaged_or_wrong_archive(fresh_cache, data_dir_with, omniglot_dir, kind):
    good = (omniglot_dir / f"{SMALL2}.zip").read_bytes()
    if kind == "truncated":
        payload = good[: len(good) // 2]
    elif kind == "flipped":
        middle = len(good) // 2
        payload = good[:middle] + bytes(b ^ 0xFF for b in good[middle:middle + 16]) + good[middle + 16:]
    elif kind == "other-content":
        payload = _other_content_zip()
    else:
        payload = b""
    folder = data_dir_with(payload)
    with pytest.raises(MetalabError) as error:
        load_omniglot([SMALL1, SMALL2], folder, download_missing=False)
    _assert_names_file_and_fix(error, folder / f"{SMALL2}.zip")
    if fresh_cache.exists():
        assert not [f for f in cache_files(fresh_cache) if SMALL2 in f]


def _patch_all(data: bytes, signature: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite the field at `offset` of every zip header that starts with `signature`."""
    out = bytearray(data)
    start = out.find(signature)
    while start >= 0:
        out[start + offset:start + offset + len(value)] = value
        start = out.find(signature, start + 1)
    return bytes(out)


def _decode_damage(kind: str, good: bytes) -> bytes:
    local, central = b"PK\x03\x04", b"PK\x01\x02"
    if kind == "truncated":
        return good[: len(good) * 2 // 3]
    if kind == "flipped-drawing":  # 16 bytes inside the stored data of the first drawing
        with zipfile.ZipFile(io.BytesIO(good)) as archive:
            info = next(i for i in archive.infolist() if i.filename.endswith(".png"))
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 20
        return good[:start] + bytes(b ^ 0xFF for b in good[start:start + 16]) + good[start + 16:]
    if kind == "unknown-compression":
        return _patch_all(_patch_all(good, central, 10, struct.pack("<H", 77)), local, 8, struct.pack("<H", 77))
    if kind == "future-zip-version":
        return _patch_all(good, central, 6, struct.pack("<H", 99))
    if kind == "encrypted-flag":
        return _patch_all(_patch_all(good, central, 8, struct.pack("<H", 1)), local, 6, struct.pack("<H", 1))
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated", "flipped-drawing", "unknown-compression", "future-zip-version",
                                  "encrypted-flag"])
def test_decoding_a_corrupt_archive_is_a_metalab_error(small_archive, tmp_path, kind):
    path = tmp_path / f"{SMALL1}.zip"
    path.write_bytes(_decode_damage(kind, small_archive.read_bytes()))
    with pytest.raises(MetalabError) as error:
        omniglot._decode_archive(SMALL1, path, Preprocessing())
    _assert_names_file_and_fix(error, path)


def test_decoding_a_broken_png_inside_a_sound_zip_is_a_metalab_error(omniglot_dir, tmp_path):
    def break_first(name, payload):
        if name.endswith("_01.png"):
            payload = bytearray(payload)
            payload[55] ^= 0xFF  # the IDAT chunk's length: PIL then meets a nonsense chunk
            return bytes(payload)
        return payload

    path = subset_archive(omniglot_dir / f"{SMALL1}.zip", tmp_path / f"{SMALL1}.zip",
                          lambda n: n.endswith("/") or "Balinese/character01/" in n, break_first)
    with pytest.raises(MetalabError) as error:
        omniglot._decode_archive(SMALL1, path, Preprocessing())
    _assert_names_file_and_fix(error, path)


def test_random_damage_never_escapes_as_another_exception(small_archive, tmp_path):
    """Seeded fuzzing: any damage gives MetalabError, or (harmless metadata) the very same arrays."""
    good = small_archive.read_bytes()
    reference = omniglot._decode_archive(SMALL1, small_archive, Preprocessing())
    rng = random.Random(0)
    path = tmp_path / f"{SMALL1}.zip"
    outcomes = {"error": 0, "same": 0}
    for _ in range(150):
        damaged = bytearray(good)
        for _ in range(rng.choice([1, 2, 4])):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        path.write_bytes(bytes(damaged))
        try:
            got = omniglot._decode_archive(SMALL1, path, Preprocessing())
        except MetalabError as error:
            assert str(path) in str(error)
            outcomes["error"] += 1
            continue
        for k in ("images", "character", "drawer"):
            assert np.array_equal(got[k], reference[k])
        outcomes["same"] += 1
    assert outcomes["error"] > 50


@pytest.mark.parametrize("kind", ["other-content", "other-archive", "no-drawings"])
def test_decoding_a_wrong_archive_names_the_file_and_the_fix(omniglot_dir, tmp_path, kind):
    path = tmp_path / f"{SMALL1}.zip"
    if kind == "other-content":
        path.write_bytes(_other_content_zip())
    elif kind == "other-archive":  # small2's drawings under small1's name
        one_character(omniglot_dir / f"{SMALL2}.zip", tmp_path / "x.zip", "Tagalog/character01").rename(path)
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(f"{SMALL1}/notes.txt", "nothing to see")
        path.write_bytes(buffer.getvalue())
    with pytest.raises(MetalabError) as error:
        omniglot._decode_archive(SMALL1, path, Preprocessing())
    _assert_names_file_and_fix(error, path)
