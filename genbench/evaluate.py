"""``genbench-evaluate``: evaluate a checkpoint of any family, or stored samples, with the one loop.

Examples::

    genbench-evaluate ckpt=outputs/mnist5k/vae/<run>/checkpoints/last.ckpt eval.num_samples=1000
    genbench-evaluate fake=my_samples/ data=mnist5k            # a folder of PNGs against a data set
    genbench-evaluate fake=fake.npz real=real/ eval=inception eval.inception_weights=pt_inception.pth
    genbench-evaluate fake=samples/ real=fid_stats_cifar10_train.npz eval=inception   # pytorch-fid / clean-fid statistics
    genbench-evaluate real=real/ eval=inception save_stats=real_stats.npz           # write statistics for other tools
    torchrun --nproc-per-node 2 -m genbench.evaluate ckpt=...  # each process samples its share

Prints a table and writes ``run_dir/results.json`` (atomically); ``save_stats=FILE.npz`` also writes the
real side's (μ, Σ) in the layout of pytorch-fid, TTUR and clean-fid.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from evaluation import DataReference, EvalConfig, Evaluator, ModelSource, TensorReference, TensorSource
from evaluation.card import weights_sha256
from evaluation.evaluator import dist_info
from evaluation.frechet import mean_and_cov
from evaluation.ref_stats import StatsReference, npz_kind, save_stats
from evaluation.registry import result_keys
from evaluation.sources import read_samples
from genbench import __version__
from genbench.errors import ConfigError, GenbenchError
from genbench.io import atomic_write_json, read_results, writable_file_errors
from genbench.runtime import start

log = logging.getLogger("genbench")

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def input_errors(cfg: DictConfig) -> list[str]:
    """Problems with what is to be evaluated (``ckpt`` / ``fake`` / ``real`` / ``data``)."""
    ckpt, fake, real, data = cfg.get("ckpt"), cfg.get("fake"), cfg.get("real"), cfg.get("data")
    save = cfg.get("save_stats")
    errors = []
    if bool(ckpt) == bool(fake) and not (save and not ckpt):
        errors.append(
            f"ckpt={ckpt!r}, fake={fake!r}: give exactly one: ckpt=PATH (a genbench checkpoint) or fake=DIR|FILE.npz (stored samples)"
            " (or neither, with save_stats=FILE.npz, to write the real side's statistics only)"
        )
    if not ckpt and bool(real) == bool(data):
        errors.append(f"real={real!r}: with fake=..., give the real reference as real=DIR|FILE.npz or as data=NAME (exactly one)")
    if ckpt and real:
        errors.append(f"real={real!r}: a checkpoint is compared with a data set (its own, or data=NAME), not with real=...")
    if save is not None:
        if not isinstance(save, str) or not save.endswith(".npz"):
            errors.append(f"save_stats={save!r}: must be the path of an .npz file (mu, sigma: the layout of pytorch-fid, "
                          "TTUR and clean-fid)")
        else:
            errors += writable_file_errors("save_stats", save, Path(save).expanduser())
    return errors + run_dir_errors(cfg.get("run_dir"))


def is_stats_file(spec: str, option: str) -> bool:
    """``spec`` is an ``.npz`` of reference statistics (``mu``, ``sigma``), not of samples; one error for an
    ``.npz`` that is neither (:func:`~evaluation.ref_stats.npz_kind`)."""
    path = Path(spec).expanduser()
    return path.is_file() and path.suffix.lower() == ".npz" and npz_kind(path, option) == "stats"


def stats_reference(spec: str, data_shape: tuple[int, ...], eval_cfg: EvalConfig) -> StatsReference:
    """``real=stats.npz`` as the real side; with ``eval.features=auto``, a file genbench wrote selects the
    feature space (and resize mode) that wrote it."""
    reference = StatsReference(Path(spec).expanduser(), data_shape)
    reference.name = str(spec)
    if eval_cfg.features == "auto" and reference.meta.get("features"):
        eval_cfg.features = str(reference.meta["features"])
        eval_cfg.resize = str(reference.meta.get("resize") or eval_cfg.resize)
    return reference


def write_stats(evaluator: Evaluator, path: str) -> Path:
    """The real side's μ and Σ (float64) in ``evaluator``'s feature space, as an ``.npz`` that pytorch-fid,
    TTUR and clean-fid read, with the space, its cache id and weights' SHA-256, the resize mode and n."""
    real, space, ref = evaluator.real_statistics(), evaluator.prepare(), evaluator.reference
    mu, sigma = mean_and_cov(real["sum"], real["cov_sum"], real["n"])
    n = real.get("num_real", real["n"])
    return save_stats(
        Path(path).expanduser(), mu[0], sigma, features=space.name, space_id=space.cache_id(),
        weights_sha256=weights_sha256(space), resize=getattr(space, "resize", None), n=None if n is None else int(n),
        reference=f"{ref.name}/{ref.split}", genbench_version=__version__,
    )  # fmt: skip


def run_dir_errors(run_dir: Any) -> list[str]:
    """``run_dir`` must be a folder where ``results.json`` can be written, and not a training run's folder:
    its ``results.json`` (the run's record) would be replaced by the evaluation's."""
    if not isinstance(run_dir, str) or not run_dir.strip():
        return [f"run_dir={run_dir!r}: must be the path of a folder for results.json"]
    out = Path(run_dir).expanduser() / "results.json"
    errors = writable_file_errors("run_dir", run_dir, out)
    if not errors and out.is_file():
        try:
            previous = read_results(out)
        except ValueError:
            previous = {}
        if "steps" in previous and "evaluated" not in previous:  # genbench-train's record
            errors.append(f"run_dir={run_dir!r}: holds a training run's results.json, which this evaluation would "
                          "replace; write elsewhere (the default is outputs/evaluate/<date>_<time>)")
    return errors


def init_distributed() -> torch.device | None:
    """Join the process group of ``torchrun`` (``WORLD_SIZE`` > 1); returns this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or torch.distributed.is_initialized():
        return None
    cuda = torch.cuda.is_available()
    torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation configured by ``cfg`` (composed ``conf/evaluate.yaml``); returns the record.

    Raises:
        ConfigError: bad options or input files, all reported at once where possible.
        CheckpointError: ``ckpt`` is missing, corrupt, unsafe or not a genbench checkpoint.
    """
    errors = input_errors(cfg) + EvalConfig.config_errors(cfg.eval)
    if errors:
        raise ConfigError(errors)
    device = init_distributed()
    if device is None:
        wanted = cfg.eval.get("device", "auto")
        device = torch.device("cuda" if wanted == "auto" and torch.cuda.is_available() else
                              "cpu" if wanted == "auto" else wanted)  # fmt: skip
    record: dict[str, Any] = {"genbench_version": __version__}

    model = None
    if cfg.get("ckpt"):
        from genbench.checkpoint import load_model

        model = load_model(cfg.ckpt, map_location=device)
    eval_node = with_run_defaults(cfg.eval, (model.run_config or {}).get("eval") if model is not None else None)
    eval_cfg = EvalConfig.from_node(eval_node)

    if model is not None:
        errors = model.sample_kwargs_errors(dict(eval_cfg.sample_kwargs))
        if errors:
            raise ConfigError(errors)
        data_cfg = cfg.data if cfg.get("data") is not None else (model.run_config or {}).get("data")
        if not data_cfg:
            raise ConfigError([f"ckpt={cfg.ckpt!r}: the checkpoint names no data set; give data=NAME"])
        reference = DataReference(instantiate(data_cfg), eval_cfg.split, eval_cfg.num_real)
        source: Any = ModelSource(model, eval_cfg.sample_kwargs)
        record.update(evaluated=str(cfg.ckpt), family=model.family)
    else:
        source = None
        if cfg.get("fake"):
            if is_stats_file(cfg.fake, "fake"):
                raise ConfigError([f"fake={cfg.fake!r}: holds reference statistics (mu, sigma), not samples; statistics "
                                   "can only be the real side (real=FILE.npz)"])
            source = TensorSource(read_samples(cfg.fake, "fake"), str(cfg.fake))
        if cfg.get("real") and is_stats_file(cfg.real, "real"):
            if source is None:
                raise ConfigError([f"real={cfg.real!r}: holds statistics already; save_stats=... writes those of samples"])
            reference = stats_reference(cfg.real, source.data_shape, eval_cfg)
        elif cfg.get("real"):
            reference = TensorReference(read_samples(cfg.real, "real"), str(cfg.real))
        else:
            reference = DataReference(instantiate(cfg.data), eval_cfg.split, eval_cfg.num_real)
        record.update(evaluated=None if source is None else str(cfg.fake), family=None)

    evaluator = Evaluator(eval_cfg, reference, device=device)
    if source is None:  # save_stats only
        return statistics_only(cfg, evaluator, record)
    results = evaluator.evaluate(source, eval_cfg.num_samples)
    results["notes"] = list(results.get("notes", [])) + list(getattr(reference, "notes", []))
    for stored in (getattr(source, "samples", None), getattr(reference, "stored", None)):
        if stored is not None:
            stored.record_listing()  # the next run on these folders skips decoding them
    record.update(results)
    record["eval_config"] = OmegaConf.to_container(eval_node, resolve=True)
    rank, _ = dist_info()
    if rank == 0 and cfg.get("save_stats"):
        record["saved_stats"] = str(write_stats(evaluator, cfg.save_stats))
    if rank == 0:
        out = Path(cfg.run_dir) / "results.json"
        atomic_write_json(out, record)
        print_table(record)
        print(f"results: {out}")
    return record


def statistics_only(cfg: DictConfig, evaluator: Evaluator, record: dict[str, Any]) -> dict[str, Any]:
    """``save_stats=FILE.npz`` without samples: the real side's statistics, written and recorded."""
    stats = evaluator.real_statistics()
    ref = evaluator.reference
    record.update(data=ref.name, split=ref.split, features=evaluator.feature_name, num_real=int(stats["n"]),
                  saved_stats=str(write_stats(evaluator, cfg.save_stats)))  # fmt: skip
    atomic_write_json(Path(cfg.run_dir) / "results.json", record)
    print(f"statistics of {ref.name}/{ref.split} ({record['num_real']} samples, {record['features']} features): "
          f"{record['saved_stats']}")
    return record


def with_run_defaults(eval_node: DictConfig, run_eval: dict[str, Any] | None) -> DictConfig:
    """``eval_node`` with what it leaves null taken from the training run's ``eval`` settings.

    ``nll_samples`` and each ``sample_kwargs`` entry: a checkpoint is then evaluated as its run
    evaluated it (a DDPM on the same sampler chain), unless the command line says otherwise.
    """
    run_eval = run_eval or {}
    node = OmegaConf.create(OmegaConf.to_container(eval_node, resolve=True))
    if node.get("nll_samples") is None:
        node.nll_samples = run_eval.get("nll_samples") if run_eval.get("nll_samples") is not None else 500
    kwargs = dict(node.get("sample_kwargs") or {})
    for key, value in (run_eval.get("sample_kwargs") or {}).items():
        if kwargs.get(key) is None:
            kwargs[key] = value
    node.sample_kwargs = kwargs
    return node


def print_table(record: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"genbench-evaluate: {record.get('evaluated')} vs {record.get('data')}/{record.get('split')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    metric_keys = [k.key for k in result_keys() if k.key in record]
    extra = ("features", "num_samples", "classifier_accuracy", "num_real", "kid_subset_size", "real_stats_cached",
             "fake_features_cached", "eval_time_s")  # fmt: skip
    keys = metric_keys + [k for k in extra if k in record and k not in metric_keys]
    for key in keys:
        v = record.get(key)
        table.add_row(key, "—" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v))
    Console().print(table)
    card = record.get("card") or {}
    if card:
        print("card: " + ", ".join(f"{k}={str(v)[:16] if k == 'weights_sha256' and v else v}" for k, v in card.items()))
    for note in record.get("notes", []):
        print(f"note: {note}")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except GenbenchError as e:
        print(f"genbench-evaluate: error: {e}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    try:
        start()
    except GenbenchError as e:
        print(f"genbench-evaluate: error: {e}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
