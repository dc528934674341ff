"""Pretrained weights of the feature spaces: a local file, or one checked download into genbench's cache.

:func:`weights_file` looks, in order, at the path option the user set (``eval.inception_weights``,
``eval.dinov2.weights``, ``eval.clip.weights``), at the places the space already knows (torch's hub
cache for InceptionV3), and at ``$GENBENCH_CACHE/weights/<file name>``. When none holds the file it
is downloaded once from the model's official source into that cache: streamed to a temporary file
beside it, its SHA-256 compared with the expected one, then renamed into place, so an interrupted
or corrupted download is never kept. Offline (no route, DNS failure, refused connection, timeout,
or ``GENBENCH_OFFLINE=1``) the answer is one error naming the file, the exact path to place it at
and the option to set instead.

What each file is checked against (never a hash made up here):

- **CLIP (OpenAI)** ``ViT-B-32.pt``, ``ViT-L-14-336px.pt``: the full SHA-256 that OpenAI publishes
  as the folder of the download address (OpenAI's ``clip`` package checks the same value).
- **InceptionV3 (torch-fidelity)** ``weights-inception-2015-12-05-6726825d.pth``: the publisher gives
  the SHA-256 prefix ``6726825d`` in the file name (torch hub's convention); the full SHA-256 below is
  the one pinned by several independent public projects, and it starts with that prefix. Both are checked.
- **DINOv2 (Meta)** ``dinov2_vit{s,b,l,g}14_pretrain.pth``: Meta publishes no checksum. The full SHA-256
  values below are those pinned by independent public projects that verify these files (ViT-S/14
  by several, ViT-B/14, ViT-L/14 and ViT-g/14 by one or two each); a download is checked against
  them. A file placed by hand (the path option) is used as given.

A file given through its path option is trusted as the user's choice (converted or fine-tuned weights
are legitimate); only downloads are refused on a hash mismatch. Either way its SHA-256 enters the
feature space's cache id, so cached statistics never mix weights.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from filelock import FileLock

from evaluation.cache import cache_root
from genbench.errors import ConfigError

log = logging.getLogger("genbench.evaluation")

#: Seconds without a byte before a download counts as offline.
TIMEOUT_S = 30.0
CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsFile:
    """One published weights file.

    Args:
        name: its file name (also its name in the cache).
        url: the official download address.
        sha256: full SHA-256 the download must have (None: not known).
        sha256_prefix: the prefix the publisher put in the file name (torch hub style), checked too.
        checked_by: where the expected hash comes from, for messages and docs.
    """

    name: str
    url: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    checked_by: str = ""


def offline() -> bool:
    """``GENBENCH_OFFLINE`` set to 1/true/yes: never download, only look for local files."""
    return os.environ.get("GENBENCH_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def cached_path(spec: WeightsFile) -> Path:
    """Where a download of ``spec`` lives: ``$GENBENCH_CACHE/weights/<name>``."""
    return cache_root() / "weights" / spec.name


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, memoised per (path, size, mtime)."""
    path = Path(path).resolve()
    return _sha256(str(path), *_stat(path))


def find_weights(
    spec: WeightsFile, value: str | None, option: str, search: Sequence[Path] = ()
) -> Path | None:
    """The local file: ``value`` (the option, which must exist), else the first of ``search`` and the cache."""
    if value:
        path = Path(str(value)).expanduser()
        if not path.is_file():
            raise ConfigError([f"{option}={value!r}: no such file"])
        return path
    return next((p for p in (*search, cached_path(spec)) if p.is_file()), None)


def missing_message(spec: WeightsFile, option: str, what: str, why: str, alternative: str = "") -> str:
    """The one error of weights that are neither local nor downloadable."""
    return (
        f"{option}=null: {what} and none are on this machine ({why}). Place {spec.name} (from {spec.url}) "
        f"at {cached_path(spec)}, or set {option}=PATH" + (f", or {alternative}" if alternative else "")
    )


def weights_errors(
    spec: WeightsFile,
    value: str | None,
    option: str,
    what: str,
    search: Sequence[Path] = (),
    alternative: str = "",
) -> list[str]:
    """Problems found before any work: a path option that is no file; no local file while offline."""
    try:
        found = find_weights(spec, value, option, search)
    except ConfigError as e:
        return e.problems
    if found is None and offline():
        return [
            missing_message(
                spec, option, what, "GENBENCH_OFFLINE is set, so genbench does not download", alternative
            )
        ]
    return []


def weights_file(
    spec: WeightsFile,
    value: str | None,
    option: str,
    what: str,
    search: Sequence[Path] = (),
    alternative: str = "",
) -> Path:
    """The weights file of ``spec``: local (see :func:`find_weights`) or downloaded once and checked.

    Args:
        spec: the published file.
        value: the path option's value (None: look in ``search`` and the cache, then download).
        option: the option's name, e.g. ``eval.dinov2.weights``, for the messages.
        what: what needs the file, e.g. ``eval.features=dinov2 needs the DINOv2 ViT-L/14 weights``.
        search: other places that may already hold the file (e.g. torch's hub cache).
        alternative: another way out named in the offline message (e.g. ``use eval.features=classifier``).
    Returns:
        the path of the file.
    Raises:
        ConfigError: the option names no file; offline with no local file; a download with the wrong hash.
    """
    found = find_weights(spec, value, option, search)
    if found is not None:
        return found
    if offline():
        raise ConfigError(
            [
                missing_message(
                    spec, option, what, "GENBENCH_OFFLINE is set, so genbench does not download", alternative
                )
            ]
        )
    dest = cached_path(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):  # concurrent runs download once
        if dest.is_file():
            return dest
        try:
            download(spec, dest)
        except (
            urllib.error.URLError,
            OSError,
        ) as e:  # refused, DNS failure, timeout (TimeoutError), HTTP errors
            why = f"downloading {spec.url} failed: " + _reason(e)
            raise ConfigError([missing_message(spec, option, what, why, alternative)]) from None
    return dest


def download(spec: WeightsFile, dest: Path, timeout: float = TIMEOUT_S) -> Path:
    """Stream ``spec.url`` to ``dest`` atomically, logging progress every 10 %; refuse a wrong SHA-256.

    The bytes go to a temporary file beside ``dest`` (renamed only once the hash matches, deleted
    otherwise), so no half-written or corrupted file is ever found at ``dest``.
    """
    if not spec.url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ValueError(f"{spec.name}: refusing to download from {spec.url!r} (https only)")
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(spec.url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0)
            log.info("downloading %s (%s) from %s to %s", spec.name, _size(total), spec.url, dest)
            done, shown = 0, 0
            while chunk := response.read(CHUNK):
                f.write(chunk)
                h.update(chunk)
                done += len(chunk)
                step = done * 10 // total if total else done // (100 * CHUNK)  # every 10 %, or every 100 MiB
                if step > shown:
                    shown = step
                    log.info(
                        "  %s: %s%s",
                        spec.name,
                        _size(done),
                        f" of {_size(total)} ({100 * done // total} %)" if total else "",
                    )
            f.flush()
            os.fsync(f.fileno())
        if total and done != total:
            raise ConfigError(
                [
                    f"{spec.name}: the download from {spec.url} stopped at {done} of {total} bytes; nothing was kept, run again"
                ]
            )
        actual = h.hexdigest()
        expected = spec.sha256 or spec.sha256_prefix
        if (spec.sha256 and actual != spec.sha256) or (
            spec.sha256_prefix and not actual.startswith(spec.sha256_prefix)
        ):
            raise ConfigError(
                [
                    f"{spec.name}: the download from {spec.url} has SHA-256 {actual}, expected {expected} "
                    f"({spec.checked_by or 'published hash'}); the file was not kept"
                ]
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("downloaded %s: SHA-256 %s checked", dest, actual)
    return dest


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = getattr(e, "reason", None) or e
    return f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n else "size unknown"
