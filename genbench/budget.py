"""Training budgets: how long a run trains, in images, FLOPs or seconds (``budget.kind``, ``budget.value``).

- ``images``: ``budget.value`` training images; null keeps ``trainer.max_steps`` (``max_steps × data.batch_size``
  images, the budget every family shared before FLOPs were counted).
- ``flops``: ``budget.value`` training FLOPs. The FLOPs of one step are counted once, before training, and
  every step costs the same, so the run takes ``floor(value / flops_per_step)`` steps and ends within one
  step's FLOPs of the budget, the same number of steps on every machine.
- ``time``: ``budget.value`` wall-clock seconds, from the start of training (Lightning's ``on_train_start``,
  as its ``max_time``) and summed over resumed sessions; ``trainer.max_steps`` still caps the run and sets
  step-based schedules (the DDPM's cosine decay). Training stops after the first step that reaches the time.

What is counted: the FLOPs ``torch.utils.flop_counter.FlopCounterMode`` counts (matrix products and
convolutions, forward and backward, 2 per multiply-add) in the module's training step as Lightning runs it,
on a copy of the model and all-zeros batches of 2 and 4 examples, extended to the run's batch size (a step's
FLOPs are affine in it; the count is exact, tests check it), with attention computed by PyTorch's
reference (math) kernel so that CPU and GPU count the same products. Elementwise work (activations,
normalisation, the optimizer's update, EMA) is not counted. A family that alternates steps (the GAN updates
its generator every ``n_critic``-th step) is counted over one whole period and charged the average per step.
Under DDP a step's FLOPs and images are those of every rank together.
"""

from __future__ import annotations

import copy
import logging
import random
import tempfile
import time
import warnings
from fractions import Fraction
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from genbench.checks import is_number
from genbench.errors import ConfigError

KINDS = ("images", "flops", "time")
UNITS = {"images": "training images", "flops": "training FLOPs", "time": "seconds"}


def budget_node(cfg: Any) -> tuple[str, Any]:
    """``(kind, value)`` of ``cfg.budget``; a config without one trains ``trainer.max_steps`` (``images``, null)."""
    node = cfg.get("budget") or {}
    if not hasattr(node, "get"):
        return node, None  # reported by budget_errors
    return node.get("kind", "images"), node.get("value")


def budget_errors(cfg: Any) -> list[str]:
    """Problems with ``cfg.budget``, one message each, naming the key, the value and what is allowed."""
    kind, value = budget_node(cfg)
    if not hasattr(cfg.get("budget") or {}, "get"):
        return [f"budget={kind!r}: must be a node {{kind: images|flops|time, value: number}}, "
                "e.g. budget.kind=flops budget.value=1e12"]
    if kind not in KINDS:
        return [f"budget.kind={kind!r}: must be one of {list(KINDS)}"]
    if value is None:
        return [] if kind == "images" else [f"budget.value=None: budget.kind={kind} needs a number > 0 ({UNITS[kind]})"]
    if not (is_number(value) and value > 0 and value != float("inf")):
        null = ", or null for trainer.max_steps" if kind == "images" else ""
        return [f"budget.value={value!r}: must be a finite number > 0 ({UNITS[kind]} for budget.kind={kind}){null}"]
    return []


def steps_per_period(model: L.LightningModule) -> int:
    """Steps after which a family's training step repeats (``GenerativeModule.steps_per_period``: the GAN's
    ``n_critic``, 1 for the others); 1 for a module that does not say."""
    return int(getattr(model, "steps_per_period", 1))


class _NoModuleTracking:
    """Stands in for FlopCounterMode's module tracker: every count goes to the total ("Global")."""

    parents = ("Global",)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: Any) -> None:
        return None


class TotalFlopCounter(FlopCounterMode):
    """``FlopCounterMode`` that counts the total only.

    Its per-module tracker registers backward hooks on every module's inputs, and those make
    ``torch.autograd.grad`` fail on leaf inputs ("A leaf node was passed to _will_engine_execute_node"):
    the GAN's gradient penalties differentiate the discriminator with respect to the images. The total
    needs no tracker; tests/test_budget.py and tests/test_gan.py pin this.
    """

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _NoModuleTracking()


class _CountBatches(L.Callback):
    """FLOPs of each training batch, from its start to its end hook (the optimizer step included)."""

    def __init__(self) -> None:
        self.flops: list[int] = []
        self._mode: FlopCounterMode | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._mode = TotalFlopCounter()
        self._mode.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        self._mode.__exit__(None, None, None)
        self.flops.append(self._mode.get_total_flops())
        self._mode = None


#: Batch sizes a step is counted at. A step's FLOPs are affine in the batch size (each example goes through
#: the networks on its own), so two small counts give them at any size; tests compare with a full-batch count.
PROBE_BATCHES = (2, 4)


def count_step_flops(cfg: Any, model: L.LightningModule, batch_size: int,
                     probe: tuple[int, int] | None = PROBE_BATCHES) -> Fraction:  # fmt: skip
    """FLOPs of one training step on one device, averaged over one period (:func:`steps_per_period`).

    Runs the period's steps with ``cfg.trainer``'s accelerator and precision on one device, on a copy of
    ``model`` (uncompiled) and all-zeros batches of ``[n, *model.data_shape]`` for each ``n`` of ``probe``
    (None or a batch that small: at ``batch_size`` itself), and extends the line through them to
    ``batch_size``. The random number generators are restored afterwards, so the run that follows is
    bitwise the one it would have been.
    """
    period = steps_per_period(model)
    sizes = tuple(probe) if probe and batch_size > max(probe) else (batch_size,)
    flops = _dry_run(cfg, model, sizes, period)
    if len(sizes) == 1:
        return Fraction(flops[0], period)
    (n0, n1), (f0, f1) = sizes, flops
    return (f0 + Fraction(f1 - f0, n1 - n0) * (batch_size - n0)) / period


def _dry_run(cfg: Any, model: L.LightningModule, sizes: tuple[int, ...], period: int) -> list[int]:
    """FLOPs of ``period`` steps at each batch size of ``sizes``, in one fit of a throwaway trainer."""
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    dry = copy.deepcopy(model)
    dry.finite_checks = False  # a count, not a run: a diverging rate (a sweep's bad trial) is the real run's to report
    dry.compile_options = None  # FLOPs of the eager step; a compiled graph would hide its ops from the counter
    batches = [(torch.zeros(n, *model.data_shape), torch.zeros(n, dtype=torch.long))
               for n in sizes for _ in range(period * accumulate)]  # fmt: skip
    counter = _CountBatches()
    states = random.getstate(), np.random.get_state()
    quiet = logging.getLogger("lightning.pytorch")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the dry trainer's "GPU available: ..." lines
    try:
        with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng(devices=_cuda_devices(cfg)), \
                warnings.catch_warnings(), torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):  # fmt: skip
            warnings.simplefilter("ignore")
            trainer = instantiate(
                cfg.trainer, devices=1, num_nodes=1, strategy="auto", max_steps=period * len(sizes), max_epochs=-1,
                max_time=None, logger=False, callbacks=[counter], enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=1,
                default_root_dir=tmp,
            )  # fmt: skip
            # batch_size=None: the loader yields each prepared batch as it is
            trainer.fit(dry, train_dataloaders=DataLoader(batches, batch_size=None))
    finally:
        quiet.setLevel(level)
        random.setstate(states[0])
        np.random.set_state(states[1])
    per_size = period * accumulate
    return [sum(counter.flops[i * per_size:(i + 1) * per_size]) for i in range(len(sizes))]


def _cuda_devices(cfg: Any) -> list[int] | None:
    """The CUDA generators to save and restore: none for a CPU run (saving them would start CUDA), else all."""
    return [] if cfg.trainer.get("accelerator", "cpu") == "cpu" else None


def _number(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


class Budget(L.Callback):
    """Keeps a run to its budget and records what it used (``results.json``: ``budget`` and ``used``).

    Args:
        kind, value: the budget (:data:`KINDS`; ``value`` None: ``trainer.max_steps``).
        flops_per_step: FLOPs of one step on one device (:func:`count_step_flops`).
        batch_size: images per step and device (``data.batch_size``).
        accumulate: batches per step (``trainer.accumulate_grad_batches``).

    ``setup`` sets the trainer's step limit for ``images`` and ``flops`` budgets, once the number of
    devices is known and before the optimizers (and their step-based schedules) are built. Seconds used
    before a resume come back with the checkpoint.
    """

    def __init__(self, kind: str, value: float | None, flops_per_step: Fraction, batch_size: int, accumulate: int = 1):
        self.kind, self.value = kind, value
        self.device_flops_per_step = Fraction(flops_per_step)
        self.device_images_per_step = int(batch_size) * int(accumulate)
        self.world_size = 1
        self.max_steps: int | None = None
        self.seconds_before = 0.0
        self.last_step_seconds = 0.0
        self._start: float | None = None
        self._end: float | None = None
        self._last_check: float | None = None

    @property
    def flops_per_step(self) -> Fraction:
        return self.device_flops_per_step * self.world_size

    @property
    def images_per_step(self) -> int:
        return self.device_images_per_step * self.world_size

    def planned_steps(self) -> int | None:
        """Steps the budget allows: the most whose images or FLOPs stay within ``value``."""
        if self.value is None or self.kind == "time":
            return None
        per_step = self.flops_per_step if self.kind == "flops" else Fraction(self.images_per_step)
        steps = int(Fraction(self.value) // per_step) if per_step > 0 else 0
        if steps < 1:
            raise ConfigError([f"budget.value={self.value!r}: less than one training step ({_number(per_step)} "
                               f"{UNITS[self.kind]} per step); must be at least that"])  # fmt: skip
        return steps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.world_size = trainer.world_size
        self.max_steps = self.planned_steps()
        if self.max_steps is not None:
            # Lightning's Trainer takes max_steps only in its constructor; this is where the value lives.
            trainer.fit_loop.epoch_loop.max_steps = self.max_steps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._last_check = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        now = time.monotonic()
        self.last_step_seconds, self._last_check = now - self._last_check, now
        if self.kind == "time":
            # Every rank stops on rank 0's clock, as Lightning's Timer does.
            stop = trainer.strategy.broadcast(self.seconds >= self.value)
            trainer.should_stop = trainer.should_stop or bool(stop)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end = time.monotonic()

    @property
    def seconds(self) -> float:
        """Wall-clock seconds of training, resumed sessions included."""
        if self._start is None:
            return self.seconds_before
        return self.seconds_before + (self._end or time.monotonic()) - self._start

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": float(self.seconds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seconds_before = float(state.get("seconds", 0.0))

    def record(self, steps: int) -> dict[str, Any]:
        """``budget`` and ``used`` of ``results.json`` after ``steps`` steps (resumed steps included)."""
        return {
            "budget": {"kind": self.kind, "value": self.value, "steps": self.max_steps,
                       "flops_per_step": _number(self.flops_per_step), "images_per_step": self.images_per_step},
            "used": {"images": steps * self.images_per_step, "steps": steps, "flops": _number(steps * self.flops_per_step),
                     "seconds": round(self.seconds, 3), "last_step_seconds": round(self.last_step_seconds, 4)},
        }  # fmt: skip


def build_budget(cfg: Any, model: L.LightningModule) -> Budget:
    """The run's :class:`Budget`, with the FLOPs of its step counted (call before ``trainer.fit``)."""
    kind, value = budget_node(cfg)
    batch_size = int(cfg.data.batch_size)
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    budget = Budget(kind, value, count_step_flops(cfg, model, batch_size), batch_size, accumulate)
    budget.planned_steps()  # a budget under one step fails here, before training (more devices only add to a step)
    return budget


def budget_record(trainer: L.Trainer) -> dict[str, Any]:
    """``budget`` and ``used`` of a finished fit (empty without a :class:`Budget` callback)."""
    for cb in trainer.callbacks:
        if isinstance(cb, Budget):
            return cb.record(trainer.global_step)
    return {}
