"""Evaluation during training: ``val/*`` metrics and a sample grid every ``eval.every_n_steps``,
and a final evaluation with ``eval.num_samples`` that ``genbench-train`` puts in ``results.json``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from evaluation.config import EvalConfig
from evaluation.evaluator import EvaluationError, Evaluator
from evaluation.features import resolve_feature_space
from evaluation.registry import logged_metrics
from evaluation.sources import DataReference, ModelSource
from genbench.io import atomic_write_bytes

log = logging.getLogger("genbench.evaluation")
SNAPSHOT_FILE = "eval_snapshot.json"

class EvalCallback(L.Callback):
    """Runs the :class:`~evaluation.evaluator.Evaluator` on the model being trained.

    Args:
        cfg: the evaluation settings.
        run_dir: sample grids go to ``run_dir/samples/``.

    After ``fit``, :attr:`final_results` holds the final evaluation (or ``{"error": ...}``) and
    :attr:`latest` the logged metrics of the last evaluation; :meth:`add_results` puts both in a
    ``results.json`` record.
    """

    def __init__(self, cfg: EvalConfig, run_dir: str | Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.evaluator: Evaluator | None = None
        self.final_results: dict[str, Any] | None = None
        self.latest: dict[str, float] = {}
        self._last_step = -1
        self._train_start: float | None = None
        self._eval_seconds = 0.0  # time spent evaluating, excluded from the training clock
        self._deferred: tuple[int, float] | None = None  # (step, training seconds) of the curve's last point

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._train_start = time.perf_counter()
        if trainer.global_step == 0 and trainer.is_global_zero:  # a fresh run: no snapshot of an earlier one
            (self.run_dir / SNAPSHOT_FILE).unlink(missing_ok=True)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.evaluator is not None:
            return
        reference = DataReference(trainer.datamodule, self.cfg.split, self.cfg.num_real)
        self.evaluator = Evaluator(self.cfg, reference, device=trainer.strategy.root_device)
        self.evaluator.prepare()  # trains the feature classifier now (cached), not in the middle of training

    def eval_steps(self, trainer: L.Trainer) -> set[int]:
        """Steps of the evaluations during training besides every ``every_n_steps``-th: ``at_fractions`` of
        the run's planned steps (an images or FLOPs budget sets ``trainer.max_steps``) and the last step, so
        that the curve ends with the same sample count as it runs (the final evaluation's is larger). With the
        final evaluation on, the last step's point is scored from the final evaluation's first samples."""
        planned = trainer.max_steps
        if not self.cfg.at_fractions or planned is None or planned <= 0:
            return set()
        return {max(1, round(f * planned)) for f in self.cfg.at_fractions} | {planned}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        step, every = trainer.global_step, self.cfg.every_n_steps
        if step == self._last_step or step == 0:
            return
        if step == self.cfg.snapshot_step and step != trainer.max_steps:  # the last step's is the final evaluation
            self._snapshot(trainer, pl_module, step)
        if not ((every > 0 and step % every == 0) or step in self.eval_steps(trainer)):
            return
        self._last_step = step
        if step == trainer.max_steps and self.cfg.final and trainer.world_size == 1 \
                and self.cfg.val_nll_samples == 0 and self.cfg.val_num_samples <= self.cfg.num_samples:  # fmt: skip
            # The final evaluation at this same step scores its first val_num_samples samples as this point
            # (Evaluator.evaluate's prefix): the same samples, drawn once.
            self._deferred = (step, self._train_seconds())
            return
        started = time.perf_counter()
        try:
            results = self._evaluate(pl_module, self.cfg.val_num_samples, self.cfg.val_nll_samples, bootstrap=0)
        except EvaluationError as e:
            log.warning("evaluation at step %d skipped: %s", step, e)
            return
        finally:
            self._eval_seconds += time.perf_counter() - started
        self.latest = logged_metrics(results)
        self._publish(trainer, results, step, f"step{step:06d}")
        self._append_history(trainer, step, results)

    def _train_seconds(self) -> float:
        """Wall-clock seconds of training so far in this session, evaluations excluded."""
        return round(time.perf_counter() - (self._train_start or time.perf_counter()) - self._eval_seconds, 3)

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        """The final evaluation's protocol at ``snapshot_step``, kept in ``eval_snapshot.json`` (a resumed
        run finds it there) and put into ``results.json`` as ``eval_snapshot``."""
        train_s, started = self._train_seconds(), time.perf_counter()
        try:
            results = {"time_s": train_s, **self._evaluate(pl_module, self.cfg.num_samples)}
        except EvaluationError as e:
            log.warning("snapshot evaluation at step %d failed: %s", step, e)
            results = {"error": str(e)}
        finally:
            self._eval_seconds += time.perf_counter() - started
        self._write_snapshot(step, results)

    @rank_zero_only
    def _write_snapshot(self, step: int, results: dict[str, Any]) -> None:
        atomic_write_bytes(self.run_dir / SNAPSHOT_FILE, json.dumps({"step": step, **results}, default=str).encode())

    @rank_zero_only
    def _append_history(self, trainer: L.Trainer, step: int, results: dict[str, Any], time_s: float | None = None) -> None:
        """One line per evaluation in ``eval_history.jsonl``: training wall-clock (evaluations excluded), step, metrics."""
        record = {"step": step, "time_s": self._train_seconds() if time_s is None else time_s}
        record.update({k: v for k, v in results.items() if isinstance(v, (int, float))})
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "eval_history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        train_s, step = self._train_seconds(), trainer.global_step
        if not self.cfg.final:
            if step == self.cfg.snapshot_step:
                self._snapshot(trainer, pl_module, step)
            return
        deferred, self._deferred = self._deferred, None
        try:
            results = self._evaluate(pl_module, self.cfg.num_samples, prefix=self.cfg.val_num_samples if deferred else None)
        except EvaluationError as e:
            log.warning("final evaluation failed: %s", e)
            self.final_results = {"error": str(e)}
            return
        if deferred is not None and self.evaluator.prefix_results is not None:  # the curve's last point, then the final
            point_step, point_s = deferred
            self._publish(trainer, self.evaluator.prefix_results, point_step, f"step{point_step:06d}", self.cfg.val_num_samples)
            self._append_history(trainer, point_step, self.evaluator.prefix_results, point_s)
        self.final_results = results
        self.latest = logged_metrics(results)
        self._publish(trainer, results, trainer.global_step, "final")
        if step == self.cfg.snapshot_step:
            self._write_snapshot(step, {"time_s": train_s, **results})

    def add_results(self, results: dict[str, Any]) -> None:
        """Into a ``results.json`` record: the final evaluation under ``eval``, the last logged ``val/*`` into
        ``metrics``, and the evaluation at ``snapshot_step`` under ``eval_snapshot``."""
        results.setdefault("metrics", {}).update(self.latest)
        if self.final_results is not None:
            results["eval"] = self.final_results
        snapshot = self.run_dir / SNAPSHOT_FILE
        if self.cfg.snapshot_step is not None and snapshot.is_file():
            results["eval_snapshot"] = json.loads(snapshot.read_text())

    def _evaluate(self, pl_module: L.LightningModule, n: int, nll_samples: int | None = None,
                  bootstrap: int | None = None, prefix: int | None = None) -> dict[str, Any]:  # fmt: skip
        """``bootstrap``: None for ``eval.bootstrap`` (the final protocol), 0 for none (the evaluations during training);
        ``prefix``: see :meth:`Evaluator.evaluate`."""
        assert self.evaluator is not None, "setup() builds the evaluator"
        self.evaluator.to(pl_module.device)
        source = ModelSource(pl_module, self.cfg.sample_kwargs)
        return self.evaluator.evaluate(source, n, nll_samples, bootstrap=bootstrap, prefix=prefix)

    @rank_zero_only
    def _publish(self, trainer: L.Trainer, results: dict[str, Any], step: int, name: str, head: int | None = None) -> None:
        """Log ``results``' metrics at ``step`` and save the sample grid ``samples/<name>.png`` (of the first
        ``head`` samples when given: a prefix evaluation's)."""
        metrics = logged_metrics(results)
        for lg in trainer.loggers:
            lg.log_metrics(metrics, step=step)
        samples = self.evaluator.last_samples if self.evaluator is not None else None
        if samples is None:
            return
        samples = samples[:head] if head is not None else samples
        path = save_samples_figure(samples, self.run_dir / "samples" / f"{name}.png", self.evaluator.reference)
        from lightning.pytorch.loggers import WandbLogger

        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.log_image(key="samples", images=[str(path)], step=step, caption=[f"{name}: fid {results['fid']:.3g}"])


def save_samples_figure(samples: Tensor, path: Path, reference: Any = None) -> Path:
    """Images as an 8-wide grid PNG; 2-D points as a scatter plot over the real reference."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if samples.dim() == 4:
        from torchvision.utils import make_grid, save_image

        save_image(make_grid((samples.float() + 1) / 2, nrow=8, padding=2, pad_value=1.0), path)
        return path
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        real = reference.samples(2000)
        ax.scatter(real[:, 0], real[:, 1], s=2, c="0.75", label="real")
    ax.scatter(samples[:, 0], samples[:, 1], s=2, c="tab:blue", label="generated")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=7, markerscale=4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def build_eval_callback(cfg: Any) -> EvalCallback | None:
    """The callback of ``cfg.eval`` (a composed train config), or None when evaluation is off.

    The feature space is checked against ``data.kind`` here, before anything is trained.
    """
    node = cfg.get("eval")
    if node is None:
        return None
    eval_cfg = EvalConfig.from_node(node)
    if eval_cfg.every_n_steps <= 0 and not eval_cfg.final and not eval_cfg.at_fractions and eval_cfg.snapshot_step is None:
        return None
    resolve_feature_space(eval_cfg.features, cfg.data.get("kind", "image") != "points")
    return EvalCallback(eval_cfg, cfg.run_dir)

