"""On-disk cache of what evaluation computes once and reuses: trained classifiers, real statistics.

Every entry is identified by a *key*, a small JSON-able dict naming everything its content
depends on (data fingerprint, split, feature space and its weights, sample count, ...). The
file name is a hash of the key and the key itself is stored inside the file and compared on
load, so changing any part of the key is a different entry, and a stale or foreign file is
never used. Entries are written atomically (temporary file + rename) under a file lock, so
concurrent processes (DDP ranks, parallel runs) compute an entry once and never read a
half-written file. Every file ends with the SHA-256 of its content: a truncated or garbled
file (even one flipped byte inside a tensor, which ``torch.load`` would read without complaint)
is recomputed and replaced, with a warning, never used.

The cache lives in ``~/.cache/genbench`` or wherever the ``GENBENCH_CACHE`` environment
variable points.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from genbench.io import atomic_write_bytes

log = logging.getLogger("genbench.evaluation")

#: Bump when the layout of cached entries changes: old entries are then simply not found.
CACHE_VERSION = 2  # 2: files end with a SHA-256 checksum
#: Separates a file's ``torch.save`` bytes from the hex SHA-256 of those bytes (``torch.load`` ignores it).
CHECKSUM_MARKER = b"\n#genbench-sha256:"


def cache_root() -> Path:
    """``$GENBENCH_CACHE`` or ``~/.cache/genbench``."""
    return Path(os.environ.get("GENBENCH_CACHE") or "~/.cache/genbench").expanduser()


def canonical_key(key: dict[str, Any]) -> str:
    return json.dumps({**key, "cache_version": CACHE_VERSION}, sort_keys=True, default=str)


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha1(canonical_key(key).encode()).hexdigest()[:20]


class TensorCache:
    """A directory of entries, each a dict of tensors and plain values stored with ``torch.save``.

    Args:
        kind: sub-directory (``classifiers``, ``real_stats``).
        root: cache root; ``cache_root()`` when None.
    """

    def __init__(self, kind: str, root: str | Path | None = None):
        self.dir = Path(root) if root is not None else cache_root() / kind

    def path(self, key: dict[str, Any]) -> Path:
        return self.dir / f"{key_digest(key)}.pt"

    def load(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The entry for ``key``, or None when absent, unreadable or stored under another key."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            body, marker, digest = path.read_bytes().rpartition(CHECKSUM_MARKER)
        except OSError as e:
            log.warning("cache entry %s is unreadable (%s: %s); recomputing it", path, type(e).__name__, e)
            return None
        if not marker or hashlib.sha256(body).hexdigest().encode() != digest:
            log.warning("cache entry %s fails its checksum (corrupt or truncated); recomputing it", path)
            return None
        try:
            entry = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
            log.warning("cache entry %s is unreadable (%s: %s); recomputing it", path, type(e).__name__, e)
            return None
        if not isinstance(entry, dict) or entry.get("key") != canonical_key(key):
            log.warning("cache entry %s belongs to another key; recomputing it", path)
            return None
        return entry

    def store(self, key: dict[str, Any], entry: dict[str, Any]) -> Path:
        """Write ``entry`` for ``key`` atomically; returns the file."""
        buffer = io.BytesIO()
        torch.save({**entry, "key": canonical_key(key)}, buffer)
        body = buffer.getvalue()
        path = self.path(key)
        atomic_write_bytes(path, body + CHECKSUM_MARKER + hashlib.sha256(body).hexdigest().encode())
        return path

    def get_or_compute(self, key: dict[str, Any], compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """The entry for ``key``, computed and stored by ``compute()`` when missing.

        Holds a file lock while computing, so concurrent callers compute it once. Returns the
        entry and whether it came from the cache. If ``compute`` raises, nothing is written.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        with FileLock(str(path) + ".lock"):
            entry = self.load(key)
            if entry is not None:
                return entry, True
            entry = compute()
            self.store(key, entry)
            return {**entry, "key": canonical_key(key)}, False
