"""Sweeps that survive a crash: re-running a multirun into the same sweep directory carries on where it stopped.

Each job of a multirun looks at its own directory before it trains (:func:`plan_job`):

- ``skip``: its ``results.json`` is a finished run (``status: ok``) of the same resolved config; the job
  returns that run's ``monitor`` value and touches none of its files;
- ``resume``: its ``checkpoints/last.ckpt`` was written with the same resolved config (a job that was
  killed, or that diverged); it continues from there with ``ckpt_path=last``, in the same W&B run;
- ``run``: anything else, from the first step (a different config is named: ``re-run: config differs
  in model.lr``).

"The same resolved config" leaves out what legitimately differs between launches: ``run_dir`` (paths
under it are compared relative to it), ``ckpt_path`` and ``resume_sweep``. ``resume_sweep=false`` runs
every job from its first step. Each job records what it did in ``sweep_job.json`` beside its
``results.json``; at the end of the multirun :func:`sweep_summary` counts them.

An Optuna search keeps its study in the sweep directory (``optuna.jsonl``, :func:`journal_storage`);
:func:`continue_optuna_study` picks it up: trials already finished count towards ``n_trials``, a trial
the crash interrupted is asked again with the same parameters (from its first step: the sweeper gives it
a new job directory), and the new trials' directories are prefixed with the number of trials already held
(``<trials>+<job number>_...``) so that no finished trial is overwritten.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from genbench.config import resolved_config
from genbench.errors import ConfigError
from genbench.io import atomic_write_json, read_results

log = logging.getLogger("genbench")

#: Top-level keys that may differ between two launches of the same job.
LAUNCH_KEYS = ("run_dir", "ckpt_path", "resume_sweep")
#: What each job of a multirun did, written in its directory (see :func:`record_job`).
JOB_RECORD = "sweep_job.json"
ACTIONS = ("skip", "resume", "run")


@dataclass
class JobPlan:
    """What a multirun job does: ``action`` (one of :data:`ACTIONS`), why, and the finished record it skips to."""

    action: str
    reason: str = ""
    results: dict[str, Any] | None = field(default=None, repr=False)


def _relative(value: Any, run_dir: str | None) -> Any:
    """``value`` with the run directory written as ``${run_dir}``, so that a moved sweep compares equal."""
    if isinstance(value, dict):
        return {k: _relative(v, run_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v, run_dir) for v in value]
    if isinstance(value, str) and run_dir:
        return value.replace(run_dir, "${run_dir}")
    return value


def config_differences(old: Any, new: dict[str, Any]) -> list[str]:
    """The dotted keys at which two resolved configs differ (``[]``: the same job), leaving out :data:`LAUNCH_KEYS`.

    ``old`` is the config a ``results.json`` or checkpoint holds (anything else differs as ``<config>``).
    """
    if not isinstance(old, dict):
        return ["<config>"]
    a = _relative({k: v for k, v in old.items() if k not in LAUNCH_KEYS}, old.get("run_dir"))
    b = _relative({k: v for k, v in new.items() if k not in LAUNCH_KEYS}, new.get("run_dir"))
    out: list[str] = []

    def walk(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in [*x, *(k for k in y if k not in x)]:
                walk(x.get(k, _MISSING), y.get(k, _MISSING), f"{where}.{k}" if where else str(k))
        elif x != y or type(x) is not type(y) and not _same_number(x, y):
            out.append(where)

    walk(a, b, "")
    return out


_MISSING = object()


def _same_number(x: Any, y: Any) -> bool:
    # 1 and 1.0 (an override written either way) are the same setting; True and 1 are not.
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y)) and x == y


def _finished(path: Path) -> dict[str, Any] | None:
    try:
        record = read_results(path)
    except ValueError:  # none, or not a record
        return None
    return record if record.get("status") == "ok" else None


def _differs(keys: list[str]) -> str:
    return "config differs in " + ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def resume_sweep_enabled(cfg: DictConfig) -> bool:
    """``resume_sweep`` (default true); anything but a boolean is refused, naming the key."""
    value = cfg.get("resume_sweep", True)
    if not isinstance(value, bool):
        raise ConfigError([f"resume_sweep={value!r}: must be true (skip finished jobs, resume killed ones) or false"])
    return value


def plan_job(cfg: DictConfig) -> JobPlan:
    """What the multirun job configured by ``cfg`` does in ``cfg.run_dir`` (see the module docstring)."""
    if not resume_sweep_enabled(cfg):
        return JobPlan("run")
    run_dir = Path(cfg.run_dir)
    try:
        new = resolved_config(cfg)
    except Exception:  # noqa: BLE001 - train() reports a config that does not resolve, as for any run
        return JobPlan("run")
    reasons = []
    finished = _finished(run_dir / "results.json")
    if finished is not None:
        keys = config_differences(finished.get("config"), new)
        if not keys:
            return JobPlan("skip", f"finished at step {finished.get('steps')}", finished)
        reasons.append(_differs(keys))
    if cfg.get("ckpt_path"):
        return JobPlan("resume", f"ckpt_path={cfg.ckpt_path}")  # the user's choice stands
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        from genbench.checkpoint import CheckpointError, read_checkpoint
        from models.base import CHECKPOINT_KEY

        try:
            ckpt = read_checkpoint(last)
        except CheckpointError as e:
            reasons.append(f"checkpoints/last.ckpt cannot be resumed ({e})")
        else:
            keys = config_differences((ckpt[CHECKPOINT_KEY] or {}).get("config"), new)
            if not keys:
                return JobPlan("resume", f"from step {ckpt.get('global_step')}")
            reasons.append(_differs(keys))
    return JobPlan("run", f"re-run: {reasons[0]}" if reasons else "")


def record_job(job_dir: Path, plan: JobPlan) -> None:
    """Write ``plan`` to ``job_dir/sweep_job.json`` for the end-of-multirun summary."""
    atomic_write_json(job_dir / JOB_RECORD, {"action": plan.action, "reason": plan.reason, "time": time.time()})


def sweep_summary(sweep_dir: Path, since: float) -> list[str]:
    """The end-of-multirun summary: ``genbench-train: N jobs: S skipped (finished), R resumed, X run``, then a
    line per job that ran again for a reason (a different config). Reads the :data:`JOB_RECORD` files written
    since ``since`` (earlier ones belong to earlier multiruns into the same directory); ``[]`` when none."""
    jobs = []
    for path in sorted(sweep_dir.rglob(JOB_RECORD)):
        try:
            if path.stat().st_mtime < since:
                continue
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("action") in ACTIONS:
            jobs.append((path.parent, record))
    if not jobs:
        return []
    n = {a: sum(r["action"] == a for _, r in jobs) for a in ACTIONS}
    lines = [f"genbench-train: {len(jobs)} jobs: {n['skip']} skipped (finished), {n['resume']} resumed, {n['run']} run"]
    lines += [f"  {job_dir}: {r['reason']}" for job_dir, r in jobs if r["action"] == "run" and r.get("reason")]
    return lines


def prepare_sweep(config: DictConfig) -> None:
    """At the start of a multirun (in the launching process, before the sweeper is built): create the sweep
    directory (an Optuna study's SQLite file lives there) and continue an Optuna study it already holds."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    continue_optuna_study(config)


def _optuna_storage(config: DictConfig) -> tuple[Any, str] | None:
    """The storage (a URL, or the object a ``_target_`` node builds) and study name of an Optuna sweep, if both are set."""
    sweeper = config.hydra.get("sweeper") or {}
    if "optuna" not in str(sweeper.get("_target_", "")) or not sweeper.get("storage") or not sweeper.get("study_name"):
        return None
    storage = sweeper.storage
    if OmegaConf.is_config(storage):
        from hydra.utils import instantiate

        storage = instantiate(storage)
    return storage, str(sweeper.study_name)


def continue_optuna_study(config: DictConfig) -> int:
    """Continue the Optuna study that ``hydra.sweeper.storage`` already holds, if any; returns its trial count.

    Trials left running by a killed search are marked failed and their parameters asked again first;
    ``hydra.sweeper.n_trials`` is lowered by the trials already finished (so it counts over every launch);
    ``hydra.sweep.subdir`` is prefixed with the number of trials the study held (``3+0_vae_seed0``: the first
    job of a launch that found 3), so the new trials' job directories (numbered from 0 by the sweeper) never
    land in an old trial's directory.
    """
    found = _optuna_storage(config)
    if found is None:
        return 0
    import optuna
    from optuna.trial import TrialState

    storage, name = found
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # a new study: the sweeper creates it
        return 0
    held = len(study.get_trials(deepcopy=False))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(trial.number, state=TrialState.FAIL)  # its process is gone
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # stable since Optuna 1.2
            study.enqueue_trial(dict(trial.params))
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    sweep = OmegaConf.to_container(config.hydra.sweep, resolve=False)
    with read_write(config.hydra), open_dict(config.hydra):
        left = max(0, int(config.hydra.sweeper.n_trials) - done)
        config.hydra.sweeper.n_trials = left
        config.hydra.sweep.subdir = f"{held}+{sweep['subdir']}"
        # Each job's config is composed again from the command line's hydra overrides: the new subdir goes there too.
        config.hydra.overrides.hydra.append(f"hydra.sweep.subdir='{held}+{sweep['subdir']}'")
        # A sampler seeded as before would draw its random start-up trials again from the start, repeating the
        # first trials' parameters: each launch seeds it with the seed plus the trials the study already holds.
        sampler = config.hydra.sweeper.get("sampler")
        if sampler is not None and sampler.get("seed") is not None:
            sampler.seed = int(sampler.seed) + held
    print(f"genbench-train: continuing Optuna study {name!r} ({storage}): {done} trial(s) finished, {left} to run",
          flush=True)  # fmt: skip
    return len(trials)


def journal_storage(path: str):
    """An Optuna storage kept in memory and in ``path``, a journal of every change (a JSON line each) that is
    replayed when the storage is opened again: a study that survives the process, with no database.

    Optuna 2.10 (the one ``hydra-optuna-sweeper`` 1.2 allows) cannot create its SQLite storage with
    SQLAlchemy 2 (it never commits its schema version), so the searches keep their studies here instead.
    A line cut short by a crash is left out.
    """
    import inspect

    from optuna.distributions import distribution_to_json, json_to_distribution
    from optuna.storages import InMemoryStorage
    from optuna.study import StudyDirection
    from optuna.trial import FrozenTrial, TrialState

    def encode(op: str, args: tuple) -> list:
        if op == "set_study_directions":
            args = (args[0], [d.name for d in args[1]])
        elif op == "set_trial_state":
            args = (args[0], args[1].name)
        elif op == "set_trial_param":
            args = (*args[:3], distribution_to_json(args[3]))
        elif op == "create_new_trial" and args[1:] and args[1] is not None:
            t = args[1]
            args = (args[0], {"state": t.state.name, "values": t.values, "params": t.params, "user_attrs": t.user_attrs,
                              "system_attrs": t.system_attrs, "intermediate_values": t.intermediate_values,
                              "distributions": {k: distribution_to_json(d) for k, d in t.distributions.items()}})  # fmt: skip
        return [op, *args]

    def decode(op: str, args: list) -> tuple:
        if op == "set_study_directions":
            return args[0], [StudyDirection[d] for d in args[1]]
        if op == "set_trial_state":
            return args[0], TrialState[args[1]]
        if op == "set_trial_param":
            return (*args[:3], json_to_distribution(args[3]))
        if op == "create_new_trial" and args[1:] and args[1] is not None:
            t = args[1]
            return args[0], FrozenTrial(
                number=-1, trial_id=-1, state=TrialState[t["state"]], value=None, values=t["values"],
                datetime_start=None, datetime_complete=None, params=t["params"], user_attrs=t["user_attrs"],
                system_attrs=t["system_attrs"], intermediate_values={int(k): v for k, v in t["intermediate_values"].items()},
                distributions={k: json_to_distribution(d) for k, d in t["distributions"].items()},
            )  # fmt: skip
        return tuple(args)

    class JournalStorage(InMemoryStorage):
        CHANGES = ("create_new_study", "delete_study", "set_study_directions", "set_study_user_attr",
                   "set_study_system_attr", "create_new_trial", "set_trial_state", "set_trial_param", "set_trial_values",
                   "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr")  # fmt: skip

        def __init__(self, journal: Path) -> None:
            super().__init__()
            self.journal, self._replaying = journal, True
            lines = journal.read_text(encoding="utf-8").splitlines() if journal.is_file() else []
            for line in lines:
                try:
                    op, *args = json.loads(line)
                except ValueError:
                    continue  # cut short by a crash: nothing after it was written
                getattr(self, op)(*decode(op, args))
            self._replaying = False

        def __repr__(self) -> str:
            return f"JournalStorage({self.journal})"

    def change(op: str):
        def method(self, *args, **kwargs):
            args = tuple(inspect.signature(getattr(InMemoryStorage, op)).bind(self, *args, **kwargs).arguments.values())[1:]
            out = getattr(InMemoryStorage, op)(self, *args)
            if not self._replaying:
                with open(self.journal, "a", encoding="utf-8") as f:
                    f.write(json.dumps(encode(op, args), default=str) + "\n")
            return out

        return method

    for op in JournalStorage.CHANGES:
        setattr(JournalStorage, op, change(op))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(path)
