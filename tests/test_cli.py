"""Command-line behaviour: multiruns and the default W&B logger offline."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_multirun_two_seeds_with_offline_wandb_runs(tmp_path):
    """`genbench-train -m seed=0,1` runs two jobs, each its own (offline) W&B run."""
    env = {"WANDB_API_KEY": None, "WANDB_MODE": None, "HOME": str(tmp_path)}  # no key configured anywhere
    r = run_cli("genbench-train", "-m", "model=vae", "seed=0,1", "trainer.max_steps=6", "eval.final=false",
                f"hydra.sweep.dir={tmp_path}/sweep", env=env, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir() and (p / "results.json").exists())
    assert len(jobs) == 2
    seeds = sorted(json.loads((j / "results.json").read_text())["seed"] for j in jobs)
    assert seeds == [0, 1]
    run_ids = set()
    for job in jobs:
        offline = list((job / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, f"expected one offline W&B run in {job}"
        run_ids.add(offline[0].name.rsplit("-", 1)[-1])
        assert list(offline[0].glob("*.wandb")), "the offline run directory holds the run file for `wandb sync`"
    assert len(run_ids) == 2  # wandb.finish() between jobs: a new run per job
    assert "checkpoints/last.ckpt" in r.stdout + r.stderr  # the run's log lines are there, and
    assert "`weights_only` was not set" not in r.stdout + r.stderr  # Lightning's line on every save is not,
    assert "💡 Tip" not in r.stdout + r.stderr  # nor its advertisement at every Trainer start,
    assert "anonymous setting has no effect" not in r.stdout + r.stderr  # nor wandb's warning on Lightning's anonymous=None,
    assert "LeafSpec" not in r.stdout + r.stderr  # nor torch's deprecation of a check inside Lightning


def test_progress_bar_shows_the_step_count_and_no_negative_epoch_total(tmp_path):
    """genbench.callbacks.ProgressBar (conf/callbacks/default.yaml) in a real fit bounded by max_steps."""
    import lightning as L
    import torch

    from genbench.callbacks import ProgressBar

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.w(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    seen = []

    class Spy(ProgressBar):
        def get_metrics(self, trainer, pl_module):
            items = super().get_metrics(trainer, pl_module)
            seen.append(items["step"])
            return items

    bar = Spy()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = L.Trainer(max_steps=5, max_epochs=-1, callbacks=[bar], logger=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, enable_model_summary=False)  # fmt: skip
    trainer.fit(Tiny(), data)
    assert seen[-1] == "5/5" and "1/5" in seen  # one update per batch, the global step out of max_steps
    assert trainer.max_epochs == -1
    assert bar._get_train_description(2).rstrip() == "Epoch 2"  # Lightning's own bar: "Epoch 2/-2"
    trainer.fit_loop.max_epochs = 4
    assert bar._get_train_description(2).rstrip() == "Epoch 2/3"
