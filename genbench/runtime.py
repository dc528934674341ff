"""What every ``genbench-*`` command sets up before it runs: plug-ins, quiet libraries and the allocator.

Importing genbench's packages changes no global state; the entry points call :func:`start`.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import warnings

from genbench.plugins import load_plugins


class DropMessages(logging.Filter):
    """Drops the log records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


#: Warnings that say nothing about a genbench run, with why each is wrong or beside the point here.
IGNORED_WARNINGS = (
    # The EMA copy is kept in eval mode on purpose; Lightning warns about eval-mode submodules at fit start.
    r"Found \d+ module\(s\) in eval mode at the start of training",
    # Lightning 2.6: ModelCheckpoint saves manual-optimisation models (the GAN) after the optimizer step,
    # which is the state wanted: weights, optimizer moments, EMA and step counter agree.
    "Using ModelCheckpoint with manual optimization",
    # On a resume inside an epoch Lightning sees no DataLoader state_dict; the data module restores the
    # stream itself and a resumed run ends bitwise equal to an uninterrupted one (tests/test_resume.py).
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # torch 2.14 deprecates a check Lightning's loops make on every fit (lightning/pytorch/utilities/_pytree.py).
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


def quiet_libraries() -> None:
    """Filter the library lines that say nothing about the run (idempotent)."""
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # Lightning's ModelCheckpoint saves full checkpoints and its connector says so on every save, worded as
    # if something had been left unset; genbench loads checkpoints with weights_only=True regardless.
    connector = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    if not any(isinstance(f, DropMessages) for f in connector.filters):
        connector.addFilter(DropMessages("`weights_only` was not set, defaulting to `False`."))
    # Lightning advertises its cloud logger at every Trainer start.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropMessages) for f in logger.filters):
            logger.addFilter(DropMessages("💡 Tip: For seamless cloud logging"))
    # alembic (imported by Optuna's storages) lists the plugins it sets up, seven lines per sweep.
    logging.getLogger("alembic").setLevel(logging.WARNING)


#: glibc's ``mallopt`` parameters and genbench's values for them (:func:`keep_freed_memory`).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES = 256 * 2**20, 2**30
#: Environment variables by which a user has already set glibc's malloc thresholds.
MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed blocks up to 256 MiB for reuse (Linux with glibc; returns whether it did).

    By default glibc serves every block above its mmap threshold (128 KiB, rising with the blocks freed, to
    32 MiB at most) with a fresh ``mmap`` that ``free`` hands back to the system, and trims the top of its
    heap once 128 KiB or more is free there. A forward pass on the CPU allocates and frees activations of
    several MiB per layer, so each one arrives as untouched memory: a page fault per 4 KiB, and the kernel
    zeroing every page. Sampling the lecture's DDPM (batch 250, SDE-DPM-Solver++(2M), 20 steps, 2 threads)
    took 5.9-8.2 s, 2.3-5.9 s of it in the kernel for 1.2-2.8 million page faults; with the thresholds
    fixed at 256 MiB (mmap) and 1 GiB (trim) it takes 4.5 s with none, the same samples bit for bit
    (docs/performance.md). The cost is that the process keeps memory it has freed (up to 1 GiB at the top of
    its heap) instead of returning it. Nothing is changed where the user has set the thresholds (``MALLOC_*_``
    variables, ``glibc.malloc`` in ``GLIBC_TUNABLES``), or on another C library. An allocator loaded through
    ``LD_PRELOAD`` (jemalloc, tcmalloc) serves the tensors instead, and glibc's settings then do nothing.
    """
    chosen = any(os.environ.get(k) for k in MALLOC_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or chosen:
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):  # musl's mallopt does nothing
        return False
    mmap = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trim = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    return bool(mmap and trim)


def start() -> None:
    """Tune the allocator, load the plug-ins (GENBENCH_PLUGINS, entry points) and quiet the libraries."""
    keep_freed_memory()
    quiet_libraries()
    load_plugins()
