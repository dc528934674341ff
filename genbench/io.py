"""Files written so that an interrupted write never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    The file gets the permissions of any newly created file (0666 less the umask), not the 0600 of
    ``mkstemp``: results and checkpoints are read by others on shared machines.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else the nearest of its parent folders that does (a file, possibly)."""
    return next(p for p in (path, *path.parents) if p.exists())


def writable_file_errors(option: str, value: Any, path: str | os.PathLike) -> list[str]:
    """What would stop :func:`atomic_write_bytes` from writing ``path``, named as ``option=value``: ``path`` is
    a directory, lies under a file, or its nearest existing folder is not writable. Checked before any work."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        return [f"{option}={str(value)!r}: {path} is a directory; give the path of a file"]
    folder = nearest_existing(path.parent)
    if not folder.is_dir():
        return [f"{option}={str(value)!r}: {folder} is a file, so {path} cannot be written under it"]
    if not os.access(folder, os.W_OK | os.X_OK):
        return [f"{option}={str(value)!r}: cannot write in {folder} (permission denied)"]
    return []


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in a ``results.json``.

    Raises:
        ValueError: saying why, when the file cannot be read, is not UTF-8 JSON or holds no JSON object.
    """
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))  # UnicodeDecodeError, JSONDecodeError: ValueErrors
    except OSError as e:
        raise ValueError(e.strerror or str(e)) from None
    if not isinstance(results, dict):
        raise ValueError(f"expected a JSON object {{...}}, found {json.dumps(results)[:40]}")
    return results


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def atomic_checkpoint_io():
    """A Lightning ``CheckpointIO`` that writes checkpoints atomically (temporary file + rename).

    A job killed while saving leaves the previous ``last.ckpt`` intact instead of a truncated file.
    """
    from lightning.fabric.utilities.cloud_io import get_filesystem
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicTorchCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            import io

            import torch

            if get_filesystem(path).protocol not in ("file", ("file", "local")):
                return super().save_checkpoint(checkpoint, path, storage_options)
            buffer = io.BytesIO()
            torch.save(checkpoint, buffer)
            atomic_write_bytes(path, buffer.getvalue())

    return AtomicTorchCheckpointIO()
