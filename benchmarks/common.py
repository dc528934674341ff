"""Timing and record helpers shared by every benchmark script.

Benchmarks here time like benchmarks, not tests: warm-up runs are discarded, the variants being
compared are run *interleaved* in the same process (A B A B …, the order rotated every repeat,
so drift in the machine's load hits every variant alike), the device is synchronised before the
clock is read, and the record keeps medians next to the raw times. Every record carries the
machine it ran on and the load average before and after, so a number is never quoted without
its context.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:  # the scripts are run as files: make the packages importable
    sys.path.insert(0, str(ROOT))

from benchmarks import RECORD_VERSION  # noqa: E402


# --- the machine ----------------------------------------------------------------------------
def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> dict[str, float]:
    """1, 5 and 15 minute load averages: runnable processes; more than the cores means the timings were shared."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return {}
    return {"1min": round(one, 2), "5min": round(five, 2), "15min": round(fifteen, 2)}


#: Whether :func:`setup` set glibc's malloc to keep freed memory (None: setup has not run).
MALLOC_KEEPS_FREED_MEMORY: bool | None = None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads, versions, the GPU if any and the load average now."""
    import lightning

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "platform": platform.platform(),
        "gpu": None,
        # glibc keeps freed blocks for reuse (genbench.runtime.keep_freed_memory), as in every genbench command
        "malloc_keeps_freed_memory": MALLOC_KEEPS_FREED_MEMORY,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, gpu_count=torch.cuda.device_count())  # fmt: skip
    return info


# --- clocks -----------------------------------------------------------------------------------
def sync(device: torch.device | str | None = None) -> None:
    """Wait for queued device work, so the clock measures it (a no-op on the CPU)."""
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device | str | None = None) -> float:
    """``time.perf_counter()`` after synchronising ``device``."""
    sync(device)
    return time.perf_counter()


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process (all its threads) and by its reaped child processes."""
    t = os.times()
    return time.process_time(), t.children_user + t.children_system


def timed(fn: Callable[[], Any], device: torch.device | str | None = None) -> tuple[dict[str, float], Any]:
    """Seconds of ``fn()`` on three clocks, and its result.

    ``wall``: ``time.perf_counter()``, the device synchronised on both sides. ``cpu``: this process's
    CPU time (``time.process_time()``, all its threads): on a shared CPU the wall clock also counts the
    time slices other jobs held, the CPU time only this process's own work, so it is the steadier
    measure there (with one torch thread, CPU ≈ wall on an idle machine). ``cpu_children``: CPU time of
    child processes started and reaped meanwhile (e.g. DataLoader workers), which ``cpu`` misses.
    A GPU's work is in neither CPU clock.
    """
    cpu0, child0 = cpu_seconds()
    start = clock(device)
    out = fn()
    wall = clock(device) - start
    cpu1, child1 = cpu_seconds()
    return {"wall": wall, "cpu": cpu1 - cpu0, "cpu_children": child1 - child0}, out


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[Any]]:
    """Run every case ``warmup`` times (discarded), then ``repeats`` times interleaved.

    Each case returns its own measurement (seconds, images/s, … or a dict of several, e.g. wall
    and CPU), so a case may time only its steady state. Repeat ``r`` runs the cases in an order
    rotated by ``r``, so no case is always the one that runs first after a pause or last before one.
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    out: dict[str, list[Any]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            out[name].append(cases[name]())
    return out


def column(results: dict[str, list[dict[str, float]]], key: str) -> dict[str, list[float]]:
    """``{case: [m[key] for each repeat]}`` of cases that return dicts of measurements."""
    return {name: [float(m[key]) for m in ms] for name, ms in results.items()}


def per_clock(ms: list[dict[str, float]], fn: Callable[[float], float] = float) -> dict[str, dict[str, Any]]:
    """``{clock: summary}`` of repeated measurements that are dicts ``{clock: value}`` (e.g. :func:`timed`'s),
    each value mapped by ``fn`` first (e.g. ``lambda s: n / s`` for a rate)."""
    return {k: summary([fn(m[k]) for m in ms]) for k in ms[0]}


def primary_clock(device: torch.device | str) -> str:
    """Which clock a comparison is decided on: process CPU time on the CPU, the wall clock on a GPU.

    With one torch thread on a shared CPU, the wall clock also counts the time slices other jobs
    held (at load 8 on 2 cores, repeats of the same loop differ by 2×); the CPU time of this
    process counts only its own work. A GPU's work is not in the CPU time: there the wall clock.
    """
    return "cpu" if torch.device(device).type == "cpu" else "wall"


def median(xs: Iterable[float]) -> float:
    return float(statistics.median(list(xs)))


def summary(xs: list[float]) -> dict[str, Any]:
    """Median, min, max and the raw values of repeated measurements."""
    return {"median": median(xs), "min": min(xs), "max": max(xs), "n": len(xs), "raw": [round(x, 6) for x in xs]}


def ratio(a: list[float], b: list[float]) -> float:
    """Median of the per-repeat ratios a[r] / b[r]: pairs measured next to each other share their load."""
    return median(x / y for x, y in zip(a, b, strict=True))


def ratio_per_clock(a: list[dict[str, float]], b: list[dict[str, float]]) -> dict[str, float]:
    """:func:`ratio` on every clock of repeated :func:`timed` measurements (clocks where b is 0 left out)."""
    return {k: ratio([m[k] for m in a], [m[k] for m in b]) for k in a[0] if all(m[k] > 0 for m in b)}


# --- memory ---------------------------------------------------------------------------------------
def rss_mib() -> float:
    """Current resident memory of this process (Linux /proc; falls back to the peak so far elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRSS:
    """Peak resident memory while the block runs, sampled by a thread every ``interval`` seconds.

    ``ru_maxrss`` only knows the peak since the process started; this sees the block alone::

        with PeakRSS() as m:
            work()
        m.peak_mib, m.growth_mib  # growth: peak over the resident memory before the block
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.before_mib = self.peak_mib = 0.0

    def __enter__(self) -> PeakRSS:
        import threading

        self.before_mib = self.peak_mib = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_mib = max(self.peak_mib, rss_mib())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mib = max(self.peak_mib, rss_mib())

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.before_mib


# --- hardware peak -------------------------------------------------------------------------------
def _kernel_rate(fn: Callable[[], Any], flops: float, device: torch.device, repeats: int) -> dict[str, float]:
    inner = 1 if device.type == "cpu" else 20
    for _ in range(2):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, start = time.process_time(), clock(device)
        for _ in range(inner):
            fn()
        wall.append((clock(device) - start) / inner)
        cpu.append((time.process_time() - c0) / inner)
    return {"seconds": median(wall), "flop_per_s": flops / median(wall), "flop_per_s_cpu": flops / median(cpu)}


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """Achievable FLOP/s of one large square matmul on ``device`` (2n³ FLOPs each), median of ``repeats``.

    Measured with the same threads as the benchmark, so "fraction of peak" compares like with like;
    ``flop_per_s_cpu`` divides by this process's CPU time instead of the wall clock.
    """
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), **_kernel_rate(lambda: a @ b, 2 * n**3, device, repeats)}


def conv_peak(device: torch.device, dtype: torch.dtype = torch.float32, channels: int = 256, batch: int = 8,
              repeats: int = 5) -> dict[str, Any]:
    """FLOP/s of one 3×3 convolution (``channels`` → ``channels`` at 32×32), median of ``repeats``.

    On CPUs where torch's matmul (MKL) does not use the widest vector units (e.g. AMD), oneDNN's
    convolutions beat it, and networks made of convolutions then exceed the "matmul peak".
    """
    import torch.nn.functional as F

    x = torch.randn(batch, channels, 32, 32, device=device, dtype=dtype)
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
    flops = 2 * batch * 32 * 32 * channels * channels * 9
    return {"channels": channels, "batch": batch, "dtype": str(dtype).removeprefix("torch."),
            **_kernel_rate(lambda: F.conv2d(x, w, padding=1), flops, device, repeats)}  # fmt: skip


# --- command line and records ----------------------------------------------------------------------
def base_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every benchmark has: --quick, --repeats, --threads, --device, --out."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced sizes for CI (writes *_quick.json)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default: per script)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="JSON record (default: benchmarks/results/<name>[_quick].json)")
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Apply the common options; returns the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    from genbench.runtime import keep_freed_memory

    global MALLOC_KEEPS_FREED_MEMORY
    MALLOC_KEEPS_FREED_MEMORY = keep_freed_memory()  # as every genbench command runs: both sides of a comparison
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    import logging
    import warnings

    import lightning  # noqa: F401  (its import sets its loggers to INFO: import first, then quieten)

    from genbench.devices import drop_unusable_nvml_check

    drop_unusable_nvml_check()  # as genbench-train does; a bare script that never imports Lightning never pays it

    # Lightning's per-fit banners would drown the benchmark's own output.
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*LightningModule.*has parameters that were not used.*")
    return torch.device(args.device)


def start_record(name: str, args: argparse.Namespace, **settings: Any) -> dict[str, Any]:
    """A new record: benchmark name, mode, machine, settings; the wall clock starts here."""
    return {
        "benchmark": name,
        "record_version": RECORD_VERSION,
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "settings": {"device": str(args.device), **settings},
        "_start": time.perf_counter(),
    }


def skipped(reason: str) -> dict[str, Any]:
    """What a record holds for a measurement that could not run here (no GPU, no weights file, …)."""
    return {"skipped": True, "reason": reason}


def record_path(name: str, args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else RESULTS / f"{name}{'_quick' if args.quick else ''}.json"


def write_record(record: dict[str, Any], args: argparse.Namespace) -> Path:
    """Add the load average at the end and the wall time, write the JSON atomically, print a summary."""
    record["machine"]["load_average_at_end"] = load_average()
    record["wall_s"] = round(time.perf_counter() - record.pop("_start"), 2)
    path = record_path(record["benchmark"], args)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=_jsonable) + "\n")
    tmp.replace(path)
    load = record["machine"]
    print(f"{record['benchmark']}: written {path} ({record['wall_s']:.0f} s, 1-min load average "
          f"{load['load_average_at_start'].get('1min')} -> {load['load_average_at_end'].get('1min')})")
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, (torch.dtype, torch.device, Path)):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# --- genbench objects from the real configs ---------------------------------------------------------
def compose(overrides: list[str], config_name: str = "train", run_dir: str | Path | None = None):
    """Compose ``conf/<config_name>.yaml`` as the command line would (``${hydra:...}`` resolvable)."""
    import tempfile

    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    run_dir = str(run_dir or tempfile.mkdtemp(prefix="genbench-bench-"))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = run_dir
        if "run_dir" in cfg:
            cfg.run_dir = run_dir
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def build(family: str, overrides: list[str] = (), seed: int = 0):
    """The genbench model and data module of ``model=family`` with ``overrides``, seeded; and the config."""
    import lightning as L
    from hydra.utils import instantiate

    cfg = compose([f"model={family}", "logger=none", *overrides])
    L.seed_everything(seed, verbose=False)
    model = instantiate(cfg.model, _convert_="all")
    dm = instantiate(cfg.data)
    dm.setup()
    return model, dm, cfg


@contextlib.contextmanager
def scratch_dir(prefix: str = "genbench-bench-") -> Iterator[Path]:
    """A temporary folder for a benchmark's files, removed after; ``GENBENCH_CACHE`` (which the benchmark may
    point into it, for cold caches) is restored on exit."""
    saved = os.environ.get("GENBENCH_CACHE")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if saved is None:
            os.environ.pop("GENBENCH_CACHE", None)
        else:
            os.environ["GENBENCH_CACHE"] = saved
        shutil.rmtree(tmp, ignore_errors=True)
