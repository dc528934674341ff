"""``genbench-train``: train one family on one data set, configured by Hydra.

Examples::

    genbench-train                                   # VAE on the embedded MNIST digits
    genbench-train model=ddpm data=rings trainer.max_steps=3000
    genbench-train -m model=vae seed=0,1,2 logger=csv
    genbench-train trainer.max_steps=600 ckpt_path=outputs/.../checkpoints/last.ckpt
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from evaluation.callback import build_eval_callback
from genbench import __version__
from genbench.callbacks import RNGState, TrainStats, scalar_metrics
from genbench.config import resolved_config
from genbench.errors import ConfigError, GenbenchError
from genbench.io import atomic_checkpoint_io, atomic_write_json
from genbench.validate import validate
from genbench.wandb_utils import configure_wandb_mode, finish_wandb

log = logging.getLogger("genbench")

# The configs live at the repository root (conf/), next to the packages (installed editable).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> str | None:
    """``last`` means this run directory's ``checkpoints/last.ckpt``; paths must exist."""
    if ckpt_path in (None, ""):
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if ckpt_path == "last" else Path(str(ckpt_path)).expanduser()
    if not path.is_file():
        raise ConfigError([f"ckpt_path={ckpt_path!r}: no checkpoint file at {path}"])
    return str(path)


def check_resume_checkpoint(ckpt_path: str | None, family: str) -> None:
    """A resumed checkpoint must be a readable genbench checkpoint of this family and version."""
    if ckpt_path is not None:
        from genbench.checkpoint import check_checkpoint, read_checkpoint

        check_checkpoint(read_checkpoint(ckpt_path), ckpt_path, family=family)


def build_loggers(cfg: DictConfig) -> list[Any]:
    return [instantiate(node) for node in (cfg.get("logger") or {}).values()]


def build_callbacks(cfg: DictConfig, has_logger: bool) -> list[L.Callback]:
    callbacks = []
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        if name == "lr_monitor" and not has_logger:
            continue  # LearningRateMonitor refuses to run without a logger
        if name == "progress_bar" and not cfg.trainer.get("enable_progress_bar", True):
            continue  # Lightning refuses a progress-bar callback when the bar is disabled
        callbacks.append(instantiate(node))
    return callbacks


def collect_results(cfg: DictConfig, model, trainer: L.Trainer, stats: TrainStats, ckpt_path: str | None) -> dict[str, Any]:
    """The ``results.json`` record of a finished ``fit``."""
    run_dir = Path(cfg.run_dir)
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    # ModelCheckpoint saves every n steps; the state at the end of training is always saved too
    # (all ranks call it, the strategy writes once).
    if trainer.global_step > 0:
        trainer.save_checkpoint(last_ckpt)
    return {
        "genbench_version": __version__,
        "family": model.family,
        "data": cfg.data.name,
        "seed": cfg.seed,
        "parameters": count_parameters(model),
        "steps": trainer.global_step,
        "resumed_from": ckpt_path,
        "start_step": stats.start_step,
        "train_images": stats.images,
        "train_time_s": round(stats.seconds, 3),
        "train_images_per_s": round(stats.images_per_s, 2),
        "metrics": scalar_metrics(trainer.callback_metrics),
        "checkpoint": str(last_ckpt),
        "run_dir": str(run_dir),
        "config": model.run_config,
    }


def publish_results(loggers: list[Any], results: dict[str, Any]) -> None:
    """Put the results record (without the config) in the W&B run summary, for ``genbench-compare --wandb``."""
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.summary["results"] = {k: v for k, v in results.items() if k != "config"}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train as configured; returns the ``results.json`` record (also written to ``run_dir``)."""
    run_dir = Path(cfg.run_dir)
    validate(cfg)  # every config problem at once, before anything is loaded
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), run_dir)
    configure_wandb_mode()

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # missing data sets fail here, before any training

    model = instantiate(cfg.model, _convert_="all")  # plain lists/dicts: checkpoints load with weights_only=True
    model.run_config = resolved_config(cfg)
    check_resume_checkpoint(ckpt_path, model.family)

    loggers = build_loggers(cfg)
    stats = TrainStats()
    eval_callback = build_eval_callback(cfg)  # None when eval.every_n_steps=0 and eval.final=false
    callbacks = build_callbacks(cfg, has_logger=bool(loggers)) + [stats, RNGState()] + ([eval_callback] if eval_callback else [])
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                                     plugins=[atomic_checkpoint_io()])
    try:
        for lg in loggers:
            lg.log_hyperparams(model.run_config)  # the whole resolved config, so runs can be filtered by any key
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        results = collect_results(cfg, model, trainer, stats, ckpt_path)
        if eval_callback is not None:
            eval_callback.add_results(results)  # final evaluation under "eval", last val/* into "metrics"
        if trainer.is_global_zero:
            atomic_write_json(run_dir / "results.json", results)
            publish_results(loggers, results)
            log.info("results: %s", run_dir / "results.json")
            log.info("checkpoint: %s", results["checkpoint"])
    finally:
        finish_wandb(loggers)
    return results


def monitored_value(results: dict[str, Any], monitor: str) -> float | None:
    metrics = results.get("metrics", {})
    value = metrics.get(monitor, metrics.get("train/loss"))
    return None if value is None else float(value)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        results = train(cfg)
    except GenbenchError as e:
        # User errors get one clear message, not a stack trace.
        print(f"genbench-train: error: {e}", file=sys.stderr)
        sys.exit(2)
    return monitored_value(results, cfg.monitor)


def main() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    _hydra_main()


if __name__ == "__main__":
    main()
