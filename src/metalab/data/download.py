"""Fetch and verify the official Omniglot archives.

The files come from the data set's own repository (github.com/brendenlake/omniglot, folder python/),
or from a mirror named by $METALAB_OMNIGLOT_URL. A download streams into `<name>.zip.part`, resumes
that file with an HTTP Range request after a dropped connection, is checked against the published
checksums, and only then is renamed to `<name>.zip`. So a `<name>.zip` in the data folder is always
complete, and a corrupt one is never kept.
"""

import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Iterable

import filelock
from tqdm import tqdm

from metalab.data.archives import ARCHIVES, BASE_URL, URL_ENV, ArchiveSpec, base_url
from metalab.errors import MetalabError

__all__ = ["ArchiveSpec", "ARCHIVES", "BASE_URL", "URL_ENV", "base_url", "file_digests",
           "download_archive", "ensure_archives"]

TIMEOUT_S = 30.0  # per socket operation (connect, each read), so a stalled server cannot hang us
MAX_ATTEMPTS = 4  # the first request plus 3 retries
BACKOFF_S = 0.5  # wait before retry k is BACKOFF_S * 2**(k-1): 0.5 s, 1 s, 2 s
_CHUNK = 1 << 16


class _Unreachable(Exception):
    """The file could not be fetched (network, server); ensure_archives reports it as missing."""


class _Truncated(Exception):
    """The server closed the connection before the body was complete; worth resuming."""


def file_digests(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file, as hex, read in one pass."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            md5.update(block)
            sha.update(block)
    return md5.hexdigest(), sha.hexdigest()


def _check(spec: ArchiveSpec, path: Path) -> tuple[str, str | None]:
    """(sha256 of the file, what is wrong with it or None) against the spec's published checksums."""
    md5, sha = file_digests(path)
    pinned = [(kind, want, got) for kind, want, got in (("md5", spec.md5, md5), ("sha256", spec.sha256, sha))
              if want is not None]
    if any(want != got for _, want, got in pinned):
        return sha, "; ".join(f"expected {kind} {want}, got {got}" for kind, want, got in pinned)
    if not pinned and not _readable_zip(path):
        return sha, "it is not a readable zip archive"
    return sha, None


def _readable_zip(path: Path) -> bool:
    """True when every member of the zip decompresses with a matching CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        return False


def download_archive(spec: ArchiveSpec, data_dir: Path, progress: bool | None = None) -> tuple[Path, str]:
    """Download one archive into `data_dir/<name>.zip`, verified; return (path, sha256).

    progress: show a progress bar (None: only when stderr is a terminal).
    Raises MetalabError when the file arrives but does not match its checksums (it is deleted), and
    _Unreachable when it cannot be fetched (a partial `.part` is kept so the next run resumes it).
    """
    data_dir = Path(data_dir)
    final = data_dir / spec.filename
    part = data_dir / (spec.filename + ".part")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MetalabError(f"cannot create the data folder {data_dir} ({error}); choose a writable "
                           "folder with --data-dir or METALAB_DATA") from error
    # Two processes fetching the same file would interleave their writes to one .part.
    with filelock.FileLock(str(final) + ".lock"):
        if final.exists():
            sha, problem = _check(spec, final)
            if problem is None:
                return final, sha  # another process finished it while we waited for the lock
        url = spec.url
        resumed = part.exists() and part.stat().st_size > 0
        print(f"{'resuming' if resumed else 'downloading'} {url} -> {final}", file=sys.stderr)
        _fetch(url, part, spec.filename, progress)
        sha, problem = _check(spec, part)
        if problem is not None and resumed:
            # The old .part may come from another server or version of the file: start over once
            # before concluding that the server sends a bad file.
            print(f"{spec.filename}: resumed download does not verify; downloading it again from the start",
                  file=sys.stderr)
            part.unlink()
            _fetch(url, part, spec.filename, progress)
            sha, problem = _check(spec, part)
        if problem is not None:
            part.unlink(missing_ok=True)
            raise MetalabError(
                f"{spec.filename} downloaded from {url} is not the official file: {problem}. The bad "
                f"download was deleted. Run again; if it fails again, the server sends a different file: "
                f"unset {URL_ENV} (or point it to a good mirror), or download {BASE_URL}/{spec.path} by "
                f"hand into {data_dir}")
        os.replace(part, final)  # same folder, so the rename is atomic: readers never see a partial file
    if spec.md5 is None and spec.sha256 is None:
        print(f"{spec.filename}: no checksum is published for this file, so it could not be verified "
              "(it was only checked to be a readable zip archive)", file=sys.stderr)
    return final, sha


def _fetch(url: str, part: Path, label: str, progress: bool | None) -> None:
    """Fill `part` with the body at `url`, resuming and retrying; raise _Unreachable when that fails."""
    failure = "no attempt made"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            _fetch_once(url, part, label, progress)
            return
        except urllib.error.HTTPError as error:
            if error.code == 416:
                # The server cannot extend our .part (e.g. it is already whole, or stale): start over.
                part.unlink(missing_ok=True)
            elif error.code not in (408, 429) and error.code < 500:
                # 404 and the like will not change on retry.
                raise _Unreachable(f"{url} answered HTTP {error.code} {error.reason}") from error
            failure = f"HTTP {error.code} {error.reason}"
        except _Truncated as error:
            failure = str(error)
        except (OSError, http.client.HTTPException) as error:
            # Refused or reset connections, DNS failures, socket timeouts, malformed responses.
            failure = str(getattr(error, "reason", None) or error) or type(error).__name__
        if attempt < MAX_ATTEMPTS:
            time.sleep(BACKOFF_S * 2 ** (attempt - 1))
    raise _Unreachable(f"{url}: {failure} (gave up after {MAX_ATTEMPTS} attempts)")


def _fetch_once(url: str, part: Path, label: str, progress: bool | None) -> None:
    """One HTTP request: append to `part` if the server honours our Range, else rewrite it from zero."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "metalab"}
    if have:
        headers["Range"] = f"bytes={have}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as response:
        start = 0  # a 200 answer means the server ignored Range and sends the whole file
        if response.status == 206:
            if _range_start(response) != have:
                part.unlink(missing_ok=True)
                raise _Truncated(f"the server resumed at an unexpected offset (we had {have} bytes)")
            start = have
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        try:
            out = open(part, "ab" if start else "wb")
        except OSError as error:
            raise _disk_error(part, error) from error
        with out, tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                       disable=None if progress is None else not progress) as bar:
            while chunk := response.read(_CHUNK):
                try:
                    out.write(chunk)
                except OSError as error:
                    raise _disk_error(part, error) from error
                bar.update(len(chunk))
    # http.client returns a short body without complaint when the peer closes early, so compare sizes.
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Truncated(f"the connection closed after {size} of {total} bytes")


def _range_start(response) -> int | None:
    """The first byte offset of a 206 answer, from `Content-Range: bytes START-END/TOTAL`."""
    value = response.headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _disk_error(part: Path, error: OSError) -> MetalabError:
    return MetalabError(f"cannot write {part} ({error}); free disk space or choose another data folder "
                        "with --data-dir or METALAB_DATA")


def ensure_archives(names: Iterable[str], data_dir: Path, download: bool = True,
                    progress: bool | None = None) -> dict[str, tuple[Path, str]]:
    """Return {name: (path, sha256)} for each named archive in `data_dir`, verified.

    A missing archive is downloaded when `download` is true. An existing file that fails verification is
    deleted and downloaded again when `download` is true, else it is an error. Archives that are missing
    and cannot be fetched (downloading off, or the network unreachable) are reported together in one
    MetalabError naming each file, its URL and the folder to put it in.
    """
    names = list(dict.fromkeys(names))  # keep order, drop repeats
    unknown = [name for name in names if name not in ARCHIVES]
    if unknown:
        raise MetalabError(f"unknown Omniglot archive {', '.join(map(repr, unknown))}; "
                           f"known archives: {', '.join(sorted(ARCHIVES))}")
    data_dir = Path(data_dir).expanduser()
    found: dict[str, tuple[Path, str]] = {}
    missing: list[ArchiveSpec] = []
    failure = None  # why the last download could not be made; later files are then not tried
    for name in names:
        spec = ARCHIVES[name]
        path = data_dir / spec.filename
        if path.exists():
            sha, problem = _check(spec, path)
            if problem is None:
                found[name] = (path, sha)
                continue
            if not download:
                raise MetalabError(
                    f"{path} is not the official {spec.filename}: {problem}. Delete it and run again with "
                    f"downloading allowed (`metalab data fetch`), or replace it with the file from {spec.url}")
            print(f"{path} is not the official file ({problem}); deleting it and downloading it again",
                  file=sys.stderr)
            path.unlink()
        if not download or failure is not None:
            missing.append(spec)
            continue
        try:
            found[name] = download_archive(spec, data_dir, progress)
        except _Unreachable as error:
            failure = str(error)
            missing.append(spec)
    if missing:
        raise MetalabError(_missing_message(missing, data_dir, failure))
    return found


def _missing_message(missing: list[ArchiveSpec], data_dir: Path, failure: str | None) -> str:
    why = "downloading is turned off" if failure is None else f"they could not be downloaded ({failure})"
    lines = [f"{len(missing)} Omniglot archive(s) missing from {data_dir}, and {why}:"]
    lines += [f"  {spec.filename}  from  {spec.url}" for spec in missing]
    retry = ("run again with downloading allowed (`metalab data fetch`)" if failure is None
             else f"run again once the network is reachable (or set {URL_ENV} to a mirror)")
    lines.append(f"Fix: download each file from its URL and put it in {data_dir} under the name shown "
                 f"(it is checked against the published checksum), or {retry}.")
    return "\n".join(lines)
