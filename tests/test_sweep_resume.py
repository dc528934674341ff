"""Sweeps that survive a crash: a multirun re-run into its sweep directory skips finished jobs, resumes the
killed one bitwise, runs the rest, and says so; an Optuna search continues its study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from genbench.errors import ConfigError
from genbench.sweep import config_differences, continue_optuna_study, journal_storage, plan_job
from tests.conftest import BIN, CONF_DIR, ROOT, TINY
from tests.test_resume import _assert_same, _state


# --- what a job does ------------------------------------------------------------------------------
def test_config_differences_ignore_where_the_run_lives():
    old = {"run_dir": "/a/3_vae_seed3", "ckpt_path": None, "seed": 3, "model": {"lr": 0.001, "latent_dim": 8},
           "callbacks": {"ckpt": {"dirpath": "/a/3_vae_seed3/checkpoints"}}, "trainer": {"max_steps": 40}}
    moved = {**old, "run_dir": "/b/3_vae_seed3", "ckpt_path": "last", "resume_sweep": True,
             "callbacks": {"ckpt": {"dirpath": "/b/3_vae_seed3/checkpoints"}}}
    assert config_differences(old, moved) == []
    assert config_differences(old, {**moved, "trainer": {"max_steps": 40.0}}) == []  # 40 and 40.0: one setting
    assert config_differences(old, {**moved, "model": {"lr": 0.002, "latent_dim": True}}) == ["model.lr", "model.latent_dim"]
    assert config_differences(old, {**moved, "model": {"lr": 0.001}, "new": 1}) == ["model.latent_dim", "new"]
    assert config_differences(None, moved) == ["<config>"]


def test_plan_job_skips_resumes_or_runs(tiny_config, tmp_path, one_thread):
    from genbench.train import train

    overrides = ("model=vae", "data=rings", "data.n_train=512", "data.n_val=256")
    train(tiny_config(*overrides))
    finished = (tmp_path / "results.json").read_bytes()

    plan = plan_job(tiny_config(*overrides))
    assert (plan.action, plan.reason) == ("skip", "finished at step 4")
    assert plan.results["steps"] == 4
    plan = plan_job(tiny_config(*overrides, "model.lr=0.002", "seed=1"))
    assert (plan.action, plan.reason) == ("run", "re-run: config differs in model.lr, seed")
    assert plan_job(tiny_config(*overrides, "++resume_sweep=false")).action == "run"
    with pytest.raises(ConfigError, match=r"resume_sweep='yes': must be true .* or false$"):
        plan_job(tiny_config(*overrides, "++resume_sweep=yes"))
    assert (tmp_path / "results.json").read_bytes() == finished  # planning reads, never writes

    # killed before results.json: the checkpoint of the same config resumes, one of another config does not
    (tmp_path / "results.json").unlink()
    assert (plan_job(tiny_config(*overrides)).action, plan_job(tiny_config(*overrides)).reason) == ("resume", "from step 4")
    plan = plan_job(tiny_config(*overrides, "model.beta=2.0"))
    assert (plan.action, plan.reason) == ("run", "re-run: config differs in model.beta")
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"garbled")
    plan = plan_job(tiny_config(*overrides))
    assert plan.action == "run" and plan.reason.startswith("re-run: checkpoints/last.ckpt cannot be resumed (checkpoint ")


# --- the crash test -------------------------------------------------------------------------------
class PauseAt(L.Callback):
    """Test helper: with ``GENBENCH_TEST_PAUSE="<seed> <marker file>"`` set, the job of that seed writes the
    marker at ``step`` and sleeps (after the checkpoint of an earlier step), so the test kills it mid-run
    without racing the clock. Without the variable it does nothing (the re-run and the reference run)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        spec = os.environ.get("GENBENCH_TEST_PAUSE")
        if spec and trainer.global_step == self.step:
            seed, marker = spec.split(" ", 1)
            if pl_module.run_config["seed"] == int(seed):
                Path(marker).write_text(str(trainer.global_step))
                time.sleep(600)


STEPS, EVERY, PAUSE = 40, 5, 12


def _cmd(*where: str, seeds: str = "0,1,2,3,4,5", multirun: bool = True) -> list[str]:
    return [str(BIN / "genbench-train"), *(["-m"] if multirun else []), "model=vae", "data=rings", "data.n_train=2000",
            "data.n_val=500", f"seed={seeds}", f"trainer.max_steps={STEPS}", "logger=csv", "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar", "eval.every_n_steps=0", "eval.final=false",
            f"callbacks.model_checkpoint.every_n_train_steps={EVERY}", "+callbacks.pause._target_=tests.test_sweep_resume.PauseAt",
            f"+callbacks.pause.step={PAUSE}", *where]  # fmt: skip


def _env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", **extra}


def _crash_and_rerun(tmp_path: Path, n_jobs: int, killed: int) -> None:
    """Starts an ``n_jobs`` multirun, SIGKILLs it while job ``killed`` (0-based) is mid-run and every job before
    it has finished, runs the same command again and checks every job's fate."""
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    cmd = _cmd(f"hydra.sweep.dir={sweep}", seeds=",".join(map(str, range(n_jobs))))
    # The uninterrupted reference of the killed job, beside the sweep (two processes on two cores).
    ref = subprocess.Popen(_cmd(f"hydra.run.dir={tmp_path / 'ref'}", seeds=str(killed), multirun=False), env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    proc = subprocess.Popen(cmd, env=_env(GENBENCH_TEST_PAUSE=f"{killed} {marker}"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    alive = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    err = proc.communicate()[1]
    assert alive and marker.read_text() == str(PAUSE), err[-3000:]

    jobs = [sweep / f"{i}_vae_seed{i}" for i in range(n_jobs)]
    finished = jobs[:killed]
    assert all((j / "results.json").is_file() for j in finished)
    assert not (jobs[killed] / "results.json").exists() and _state(jobs[killed] / "checkpoints" / "last.ckpt")["step"] == 10
    assert not any(j.exists() for j in jobs[killed + 1:])
    before = {j: ((j / "results.json").read_bytes(), (j / "results.json").stat().st_mtime_ns,
                  (j / "checkpoints" / "last.ckpt").stat().st_mtime_ns) for j in finished}  # fmt: skip

    again = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    n_run = n_jobs - killed - 1
    assert f"genbench-train: {n_jobs} jobs: {killed} skipped (finished), 1 resumed, {n_run} run\n" in again.stdout
    for j in finished:  # not retrained: results and checkpoints untouched
        after = ((j / "results.json").read_bytes(), (j / "results.json").stat().st_mtime_ns,
                 (j / "checkpoints" / "last.ckpt").stat().st_mtime_ns)  # fmt: skip
        assert after == before[j], j
    actions = [json.loads((j / "sweep_job.json").read_text())["action"] for j in jobs]
    assert actions == ["skip"] * killed + ["resume"] + ["run"] * n_run

    resumed = json.loads((jobs[killed] / "results.json").read_text())
    assert resumed["status"] == "ok" and resumed["start_step"] == 10 and resumed["steps"] == STEPS
    assert resumed["resumed_from"] == str(jobs[killed] / "checkpoints" / "last.ckpt")
    assert ref.wait(timeout=300) == 0, ref.stderr.read()[-3000:]
    reference = json.loads((tmp_path / "ref" / "results.json").read_text())
    # the budget's accounting goes on over the resume: images, steps and FLOPs as if never stopped
    assert {k: resumed["used"][k] for k in ("images", "steps", "flops")} == {k: reference["used"][k] for k in ("images", "steps", "flops")}
    a, b = _state(tmp_path / "ref" / "checkpoints" / "last.ckpt"), _state(jobs[killed] / "checkpoints" / "last.ckpt")
    assert a["step"] == b["step"] == STEPS
    _assert_same(a["weights"], b["weights"], "state_dict")
    _assert_same(a["optimizers"], b["optimizers"], "optimizer_states")
    for j in jobs[killed + 1:]:
        record = json.loads((j / "results.json").read_text())
        assert record["status"] == "ok" and record["start_step"] == 0 and record["steps"] == STEPS


@pytest.mark.slow
def test_a_killed_six_job_sweep_carries_on(tmp_path):
    """The issue's crash test: 3 jobs finished and the 4th mid-run when the multirun is killed."""
    _crash_and_rerun(tmp_path, n_jobs=6, killed=3)


def test_a_killed_sweep_carries_on(tmp_path):
    """The same with 4 jobs (2 finished, the 3rd killed mid-run, 1 to run), for the default suite."""
    _crash_and_rerun(tmp_path, n_jobs=4, killed=2)


# --- Optuna ---------------------------------------------------------------------------------------
def _search_config(sweep_dir: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=["hparams_search=vae_optuna", f"hydra.sweep.dir={sweep_dir}", *overrides],
                       return_hydra_config=True)  # fmt: skip


@pytest.mark.parametrize("search", sorted(p.stem for p in Path(CONF_DIR, "hparams_search").glob("*.yaml")))
def test_optuna_studies_are_kept_in_the_sweep_directory(tmp_path, search):
    cfg = _search_config(tmp_path, f"hparams_search={search}")
    assert cfg.hydra.sweeper.storage == {"_target_": "genbench.sweep.journal_storage", "path": f"{tmp_path}/optuna.jsonl"}
    assert cfg.hydra.sweeper.study_name == f"{search.split('_')[0]}_mnist5k_fid"


def test_the_journal_storage_replays_a_study(tmp_path):
    """Every change is one JSON line; a storage opened on the file holds the same trials (a line cut short is left out)."""
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(study_name="s", storage=journal_storage(tmp_path / "j.jsonl"), direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_categorical("c", [1, 2]), n_trials=3)
    study.enqueue_trial({"x": 0.5, "c": 2})
    running = study.ask()
    running.set_user_attr("lr", "1e-3")
    with open(tmp_path / "j.jsonl", "a") as f:
        f.write('["set_trial_state", 3, "COMP')  # killed while writing
    again = optuna.load_study(study_name="s", storage=journal_storage(tmp_path / "j.jsonl"))
    assert again.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [(t.params, t.values, t.state) for t in again.trials] == [(t.params, t.values, t.state) for t in study.trials]
    assert again.trials[3].state == TrialState.RUNNING and again.trials[3].user_attrs == {"lr": "1e-3"}
    assert again.trials[3].system_attrs["fixed_params"] == {"x": 0.5, "c": 2}
    assert again.best_value == study.best_value


def test_a_stopped_optuna_study_continues(tmp_path):
    """2 trials finished and 1 killed: 5 trials in all means 3 more, the killed one's parameters first."""
    import optuna
    from optuna.trial import TrialState

    cfg = _search_config(tmp_path, "hydra.sweeper.n_trials=5")
    assert continue_optuna_study(cfg) == 0 and cfg.hydra.sweeper.n_trials == 5  # no study yet: nothing changes
    study = optuna.create_study(study_name="vae_mnist5k_fid", storage=journal_storage(cfg.hydra.sweeper.storage.path))
    for lr in (1e-3, 2e-3):
        study.enqueue_trial({"model.lr": lr})
        trial = study.ask()
        study.tell(trial, trial.suggest_float("model.lr", 1e-4, 3e-3, log=True))
    study.enqueue_trial({"model.lr": 5e-4})
    study.ask().suggest_float("model.lr", 1e-4, 3e-3, log=True)  # running when the search was killed

    assert continue_optuna_study(cfg) == 4
    assert cfg.hydra.sweeper.n_trials == 3
    # the sampler's seed moves on by the trials held: seeded as before, its random start-up trials would
    # repeat the first launch's parameters (a search restarted this way once re-ran trial 0's exactly)
    assert cfg.hydra.sweeper.sampler.seed == 0 + 3
    first = optuna.samplers.RandomSampler(seed=0)._rng.uniform()
    assert optuna.samplers.RandomSampler(seed=cfg.hydra.sweeper.sampler.seed)._rng.uniform() != first
    study = optuna.load_study(study_name="vae_mnist5k_fid", storage=journal_storage(cfg.hydra.sweeper.storage.path))
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.WAITING]
    assert study.get_trials()[3].system_attrs["fixed_params"] == {"model.lr": 5e-4}  # asked again first
    assert OmegaConf.to_container(cfg.hydra.overrides)["hydra"][-1] == "hydra.sweep.subdir='3+${hydra.job.num}_${hydra:runtime.choices.model}_seed${seed}'"
    assert OmegaConf.to_container(cfg.hydra.sweep)["subdir"] == "3+${hydra.job.num}_${hydra:runtime.choices.model}_seed${seed}"


@pytest.mark.slow
def test_an_optuna_search_run_twice_counts_its_trials_over_both(tmp_path):
    from tests.conftest import run_cli

    def search(n: int):
        r = run_cli("genbench-train", "hparams_search=vae_optuna", f"hydra.sweeper.n_trials={n}", "data=rings",
                    "data.n_train=512", "data.n_val=256", *TINY, "eval.final=true", "eval.num_samples=64",
                    "eval.nll_samples=0", f"hydra.sweep.dir={tmp_path}", env={"OMP_NUM_THREADS": "1"})  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    search(2)
    first = {p: p.read_bytes() for p in tmp_path.glob("*/results.json")}
    r = search(3)
    assert {p: p.read_bytes() for p in first} == first  # the new trial has a directory of its own
    assert "2 trial(s) finished, 1 to run" in r.stdout
    assert sorted(p.parent.name for p in tmp_path.glob("*/results.json")) == ["0_vae_seed0", "1_vae_seed0", "2+0_vae_seed0"]
    import optuna

    study = optuna.load_study(study_name="vae_rings_fid", storage=journal_storage(tmp_path / "optuna.jsonl"))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
