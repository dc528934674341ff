"""The layers read top-down: the lower packages never import the apps, import without global side
effects, and reach Lightning's private state only through genbench.lightning_compat (pinned here)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lightning as L
import torch

from genbench.lightning_compat import logs_this_step, precisions, strategies, training_batches_processed
from tests.conftest import ROOT

LOWER = ("models", "datamodules", "evaluation")
#: The shared utilities of the bottom layer: what models/, datamodules/ and evaluation/ may import from genbench.
UTILITIES = {"genbench", "genbench.errors", "genbench.checks", "genbench.io", "genbench.schema", "genbench.devices",
             "genbench.lightning_compat"}  # fmt: skip


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_lower_layers_import_only_the_shared_utilities_of_genbench():
    bad = {}
    for package in LOWER:
        for path in sorted((ROOT / package).rglob("*.py")):
            up = sorted(n for n in _imports(path) if n.split(".")[0] == "genbench" and n not in UTILITIES)
            if up:
                bad[str(path.relative_to(ROOT))] = up
    assert bad == {}


def test_no_private_lightning_state_outside_the_adapter():
    private = ("_logger_connector", "fit_loop", "batch_progress", "_get_train_description", "_results")
    found = [f"{p.relative_to(ROOT)}: {name}" for package in ("models", "datamodules") for p in (ROOT / package).rglob("*.py")
             for name in private if name in p.read_text()]  # fmt: skip
    assert found == []


def test_importing_the_packages_changes_no_warning_or_logging_filters():
    code = (
        "import logging, warnings\n"
        # the libraries first: their own filters are theirs
        "import torch, torchvision, lightning, torchmetrics, hydra, omegaconf, numpy, scipy, matplotlib, rich, torch._dynamo\n"
        "before = (list(warnings.filters), {n: (l.level, list(l.filters)) for n, l in logging.root.manager.loggerDict.items() "
        "if isinstance(l, logging.Logger)})\n"
        "import models.gan, models.vae, models.ddpm, models.registry, datamodules.mnist5k, datamodules.toy2d, "
        "evaluation.evaluator, evaluation.metric_specs, evaluation.callback\n"
        "after_w = list(warnings.filters)\n"
        "changed = [n for n, (lvl, f) in before[1].items() if (logging.getLogger(n).level, logging.getLogger(n).filters) != (lvl, f)]\n"
        "new = [w for w in after_w if w not in before[0]]\n"
        "print(repr(new), repr(changed))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[] []"


class _Probe(L.LightningModule):
    """Records what the adapter says at every training step."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[tuple[int, int, bool]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.global_step, training_batches_processed(self.trainer), logs_this_step(self.trainer)))
        return (self.w - batch[0]).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_compat_reads_what_genbench_relies_on(tmp_path):
    """Pins the private Lightning state of genbench.lightning_compat: batches processed before the step
    (the data stream's position in checkpoints) and the steps whose logs reach the loggers."""
    model = _Probe()
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(10, 1)), batch_size=2)
    trainer = L.Trainer(max_steps=7, log_every_n_steps=3, logger=L.pytorch.loggers.CSVLogger(tmp_path), enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, data)
    assert [s[1] for s in model.seen] == [0, 1, 2, 3, 4, 5, 6]  # processed so far, across the epoch boundary (5 batches)
    assert training_batches_processed(trainer) == 7
    # logged on every 3rd step (steps 2 and 5, 0-indexed), on each epoch's last batch (4) and on the last step (6)
    assert [s[0] for s in model.seen if s[2]] == [2, 4, 5, 6]
    assert logs_this_step(None) is True


def test_trainer_choices_come_from_the_installed_lightning():
    """genbench's checks of trainer.precision / trainer.strategy accept what this Lightning accepts."""
    assert {"32-true", "32", "bf16-mixed", "16-mixed", "64-true", "transformer-engine"} <= set(precisions())
    assert {"auto", "ddp", "ddp_find_unused_parameters_true", "fsdp", "deepspeed", "single_device"} <= set(strategies())
    for p in precisions():  # each is a precision Lightning's connector takes
        L.fabric.connector._convert_precision_to_unified_args(p)
