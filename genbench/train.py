"""``genbench-train``: train one family on one data set, configured by Hydra.

Examples::

    genbench-train                                   # VAE on the embedded MNIST digits
    genbench-train model=ddpm data=rings trainer.max_steps=3000
    genbench-train -m model=vae seed=0,1,2 logger=csv
    genbench-train trainer.max_steps=600 ckpt_path=outputs/.../checkpoints/last.ckpt

Failures: bad input (config, files) exits with status 2 and writes no checkpoint or result (Hydra has
already written its ``.hydra/`` record and ``train.log``). A run whose loss or
weights become non-finite stops, keeps its last good checkpoint, records ``status: diverged`` and
the message in ``results.json`` and exits with status 3. In a multirun (``-m``) a failed job is
recorded the same way (``status: failed`` for bad input) and the sweep goes on with its next job
(an Optuna trial gets the worst value, +inf when minimising). When all jobs are done the failures
are listed and the multirun exits with the largest of their statuses (2 or 3); 0 if none failed.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from evaluation.callback import build_eval_callback
from genbench import __version__, sweep
from genbench.budget import budget_record, build_budget
from genbench.callbacks import RNGState, TrainStats, scalar_metrics
from genbench.config import resolved_config
from genbench.devices import drop_unusable_nvml_check
from genbench.errors import ConfigError, GenbenchError, TrainingDivergedError
from genbench.io import atomic_checkpoint_io, atomic_write_json, read_results
from genbench.runtime import start
from genbench.validate import validate
from genbench.wandb_utils import (
    WandbRunId,
    configure_wandb_mode,
    drop_unset_anonymous,
    finish_wandb,
    is_wandb_node,
    wandb_run_id,
)

log = logging.getLogger("genbench")


# The configs live at the repository root (conf/), next to the packages (installed editable).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

#: Exit statuses of genbench-train (see the module docstring).
EXIT_BAD_INPUT, EXIT_DIVERGED = 2, 3
#: ``results.json`` "status" of failed runs -> exit status.
FAILURE_EXIT = {"failed": EXIT_BAD_INPUT, "diverged": EXIT_DIVERGED}


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


def check_resume_checkpoint(ckpt_path: str | None, model: Any) -> dict[str, Any] | None:
    """A resumed checkpoint must be a readable genbench checkpoint of this family and version, with
    weights that fit the model this run's config builds (checked before any training); returns it."""
    if ckpt_path is None:
        return None
    from genbench.checkpoint import CheckpointError, check_checkpoint, read_checkpoint, weights_mismatch

    ckpt = read_checkpoint(ckpt_path)
    check_checkpoint(ckpt, ckpt_path, family=model.family)
    mismatch = weights_mismatch(model, ckpt["state_dict"])
    if mismatch:
        raise CheckpointError(
            f"checkpoint {ckpt_path}: its weights do not fit the {model.family} model this run's config builds "
            f"({mismatch}); resume with the model.* and net.* settings of the run that wrote it"
        )
    return ckpt


def build_loggers(cfg: DictConfig, run_id: str | None = None) -> list[Any]:
    """The configured loggers; a W&B logger continues the run ``run_id`` (created if new)."""
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if is_wandb_node(node):
            extra = {} if run_id is None else {"id": run_id, "resume": "allow"}
            loggers.append(drop_unset_anonymous(instantiate(node, **extra)))
        else:
            loggers.append(instantiate(node))
    return loggers


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


def family_trainer_settings(cfg: DictConfig, model) -> dict[str, Any]:
    """Trainer arguments a family needs: DDP must look for unused parameters in the GAN's per-player backward passes."""
    if cfg.trainer.get("strategy") == "ddp" and model.ddp_find_unused_parameters:
        return {"strategy": "ddp_find_unused_parameters_true"}
    return {}


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
        "status": "ok",
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
        **budget_record(trainer),  # "budget" and "used": images, steps, FLOPs and seconds, resumed steps included
        "checkpoint": str(last_ckpt),
        "run_dir": str(run_dir),
        "config": model.run_config,
    }


def failure_results(cfg: DictConfig, run_dir: Path, status: str, error: Exception, family: str | None = None,
                    steps: int | None = None, ckpt_path: str | None = None) -> dict[str, Any]:
    """The ``results.json`` record of a run that failed: ``status`` (``diverged`` / ``failed``) and the message."""
    last_ckpt = run_dir / "checkpoints" / "last.ckpt"
    try:
        config = resolved_config(cfg)
    except Exception:  # noqa: BLE001 - the failure may be that the config does not resolve
        config = None
    return {
        "genbench_version": __version__,
        "status": status,
        "error": str(error),
        "family": family,
        "data": cfg.get("data", {}).get("name"),
        "seed": cfg.get("seed"),
        "steps": steps,
        "resumed_from": ckpt_path,
        "checkpoint": str(last_ckpt) if last_ckpt.is_file() else None,  # the last good one, if any
        "run_dir": str(run_dir),
        "config": config,
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
    drop_unusable_nvml_check()

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # missing data sets fail here, before any training

    model = instantiate(cfg.model, _convert_="all")  # plain lists/dicts: checkpoints load with weights_only=True
    model.run_config = resolved_config(cfg)
    resumed = check_resume_checkpoint(ckpt_path, model)
    eval_callback = build_eval_callback(cfg)  # None when eval.every_n_steps=0 and eval.final=false
    errors = model.sample_kwargs_errors(dict(cfg.eval.sample_kwargs or {})) if eval_callback else []
    if errors:  # the evaluations would sample only after training
        raise ConfigError(errors)

    logger_nodes = list((cfg.get("logger") or {}).values())
    run_id = wandb_run_id(logger_nodes, resumed)  # a resumed run continues its W&B run
    loggers = build_loggers(cfg, run_id)
    stats = TrainStats()
    budget = build_budget(cfg, model)  # counts one step's FLOPs on a copy of the model (RNG restored); sets max_steps
    callbacks = [budget] + build_callbacks(cfg, has_logger=bool(loggers)) + [stats, RNGState()] + ([eval_callback] if eval_callback else [])
    callbacks += [WandbRunId(run_id)] if run_id else []
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks,
                                     plugins=[atomic_checkpoint_io()], **family_trainer_settings(cfg, model))
    try:
        for lg in loggers:
            lg.log_hyperparams(model.run_config)  # the whole resolved config, so runs can be filtered by any key
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
            results = collect_results(cfg, model, trainer, stats, ckpt_path)  # its final save is guarded too
        except TrainingDivergedError as e:
            # The guard (models/divergence.py) stopped before any non-finite weights were saved: the last
            # good checkpoint stays, and the failure is on record for genbench-compare and sweeps.
            if trainer.is_global_zero:
                failed = failure_results(cfg, run_dir, "diverged", e, model.family, trainer.global_step, ckpt_path)
                atomic_write_json(run_dir / "results.json", failed)
                publish_results(loggers, failed)
            raise
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


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def is_global_zero() -> bool:
    # Lightning's DDP launcher starts ranks > 0 with LOCAL_RANK / NODE_RANK set.
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        if in_multirun():  # a re-run sweep skips finished jobs and resumes killed ones (genbench/sweep.py)
            plan = sweep.plan_job(cfg)
            log.info("sweep: %s %s%s", plan.action, cfg.run_dir, f" ({plan.reason})" if plan.reason else "")
            if is_global_zero():
                sweep.record_job(Path(HydraConfig.get().runtime.output_dir), plan)
            if plan.action == "skip":
                return monitored_value(plan.results, cfg.monitor)
            if plan.action == "resume" and not cfg.get("ckpt_path"):
                cfg.ckpt_path = "last"
        results = train(cfg)
    except GenbenchError as e:
        # User errors and diverged runs get one clear message, not a stack trace.
        print(f"genbench-train: error: {e}", file=sys.stderr)
        diverged = isinstance(e, TrainingDivergedError)  # train() has recorded it in results.json
        if not in_multirun():
            sys.exit(EXIT_DIVERGED if diverged else EXIT_BAD_INPUT)
        # A sweep goes on with its next job: the failure is on record in this job's results.json,
        # ReportFailedJobs sets the exit status at the end, and Optuna gets the worst value.
        if not diverged and is_global_zero():
            job_dir = Path(HydraConfig.get().runtime.output_dir)
            record_bad_input(job_dir, failure_results(cfg, job_dir, "failed", e))
        return worst_value()
    return monitored_value(results, cfg.monitor)


#: Where a job that failed on bad input records it when its directory already holds a finished run.
FAILED_RESULTS = "results.failed.json"


def record_bad_input(job_dir: Path, record: dict[str, Any]) -> Path:
    """Write the ``failed`` record of a multirun job into ``job_dir/results.json``, unless that file is the
    record of a finished run (a sweep re-run into the same directory with a bad override): that one is kept,
    as the run it describes is, and the failure goes to ``results.failed.json`` beside it."""
    out = job_dir / "results.json"
    try:
        finished = read_results(out).get("status") == "ok"
    except ValueError:  # none, or not a record
        finished = False
    if finished:
        out = job_dir / FAILED_RESULTS
    atomic_write_json(out, record)
    return out


def worst_value() -> float | list[float]:
    """What a failed job returns to the sweeper: the worst value in the sweep's direction.

    Optuna records the trial as complete and worst (it refuses NaN and would end the sweep);
    the basic sweeper ignores return values.
    """
    direction = HydraConfig.get().sweeper.get("direction", "minimize")

    def worst(d: Any) -> float:
        return float("-inf") if "max" in str(d).lower() else float("inf")

    return [worst(d) for d in direction] if isinstance(direction, (list, tuple, ListConfig)) else worst(direction)


class ReportFailedJobs(HydraCallback):
    """Hydra callback (``conf/hydra/default.yaml``): at the start of a multirun, prepare its directory to continue
    an earlier launch (:func:`genbench.sweep.prepare_sweep`); at the end, count the jobs skipped, resumed and run
    (:func:`genbench.sweep.sweep_summary`) and list the jobs that failed.

    Failed jobs are found by the ``status`` of the ``results.json`` (and ``results.failed.json``, see
    :func:`record_bad_input`) files written under the sweep directory during this multirun, so it works
    with any launcher that shares the file system.
    Exits with the largest exit status of the failures (2 bad input, 3 diverged).
    """

    def __init__(self) -> None:
        self.started = 0.0
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import time

        self.started = time.time() - 1.0  # file times can be rounded to the second
        self.sweep_dir = Path(config.hydra.sweep.dir)  # ${now:...} is resolved once, here and for the sweeper
        sweep.prepare_sweep(config)
        if not any(o.startswith("hydra.sweep.dir=") for o in config.hydra.overrides.hydra):
            print(f"genbench-train: sweep directory {self.sweep_dir}; if this multirun is stopped, the same command "
                  f"with hydra.sweep.dir={self.sweep_dir} carries on from there", flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failures = []
        sweep_dir = self.sweep_dir or Path(config.hydra.sweep.dir)
        summary = sweep.sweep_summary(sweep_dir, self.started)
        if summary:
            print("\n".join(summary), flush=True)
        for path in sorted([*sweep_dir.rglob("results.json"), *sweep_dir.rglob(FAILED_RESULTS)]):
            try:
                if path.stat().st_mtime < self.started:
                    continue  # left by an earlier multirun into the same directory
                record = read_results(path)
            except (OSError, ValueError):
                continue
            if record.get("status", "ok") in FAILURE_EXIT:
                failures.append((path.parent, record))
        if not failures:
            return
        lines = [f"genbench-train: {len(failures)} job(s) of this multirun failed:"]
        for run_dir, record in failures:
            first_line = str(record.get("error", "")).splitlines()[0] if record.get("error") else ""
            lines.append(f"  {run_dir}: {record['status']}: {first_line}")
        print("\n".join(lines), file=sys.stderr)
        sys.exit(max(FAILURE_EXIT[r["status"]] for _, r in failures))


def main() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    try:
        start()
    except GenbenchError as e:
        print(f"genbench-train: error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    _hydra_main()


if __name__ == "__main__":
    main()
