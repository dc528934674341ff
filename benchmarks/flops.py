"""Hardware utilisation: FLOPs per training image and achieved FLOP/s as a fraction of a measured matmul peak.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` over one training step of the
bare loop of ``train_overhead.py`` (forward and backward of every network the step runs; the
optimizer's elementwise work is not counted), on the meta device, so counting costs nothing.
Networks: each family's default mnist5k network and the paper's CIFAR-10 UNet
(``net=unet_cifar10``, 35.7 M parameters, on random 3×32×32 data).

Achieved FLOP/s = FLOPs per image × images/s of the bare training loop on this machine; the
peak is the FLOP/s of a large square fp32 matmul measured in the same process, interleaved with
the training runs (the fraction is of what this machine can do now, load included). A 3×3
convolution's FLOP/s is measured too: on CPUs where torch's matmul (MKL) is slower than oneDNN's
convolutions, convolutional networks exceed the matmul "peak", and the best of the two is the
fairer ceiling (``fraction_of_best_kernel_peak``). On the CPU, rates are taken over this process's
CPU time (one torch thread), for the peaks and the training alike, so other jobs' time slices cancel.

    python benchmarks/flops.py --quick
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.train_loops import BareLoop, bare_step, overrides  # noqa: E402

#: name -> (family, extra config overrides)
NETWORKS = {
    "gan": ("gan", []),
    "vae": ("vae", []),
    "ddpm": ("ddpm", []),
    "ddpm_unet_cifar10": ("ddpm", ["net=unet_cifar10", "data=cifar10"]),
}


def config(name: str, batch_size: int, device: torch.device):
    family, extra = NETWORKS[name]
    return family, common.compose([f"model={family}", "logger=none", *overrides(family, batch_size, device, extra)])


def count_flops(name: str, batch: int = 4) -> dict[str, Any]:
    """FLOPs per image of one training step and of one forward pass of the main network (meta tensors)."""
    family, cfg = config(name, batch, torch.device("cpu"))
    model = instantiate(cfg.model, _convert_="all").to("meta")
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    step = bare_step(family, model, cfg, torch.device("meta"))
    x = torch.zeros(batch, *model.data_shape, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        step(x)
    by_op = {str(k).split(".")[-1]: v / batch for k, v in counter.get_flop_counts()["Global"].items()}
    return {"parameters": params, "data_shape": list(model.data_shape), "train_flops_per_image": counter.get_total_flops() / batch,
            "by_op": by_op}  # fmt: skip


def train_loop(name: str, batch_size: int, device: torch.device) -> BareLoop:
    family, cfg = config(name, batch_size, device)
    model = instantiate(cfg.model, _convert_="all")
    if name == "ddpm_unet_cifar10":  # no CIFAR-10 files offline: random images of its shape
        x = torch.randint(0, 256, (max(4 * batch_size, 64), *model.data_shape), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    else:
        dm = instantiate(cfg.data)
        dm.setup()
        x = dm.x_train
    return BareLoop(bare_step(family, model, cfg, device), x, batch_size, device)


def main(argv: list[str] | None = None) -> int:
    parser = common.base_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=None, help="mnist5k networks (default 128, quick 32)")
    parser.add_argument("--cifar-batch-size", type=int, default=None, help="CIFAR-10 UNet (default 8, quick 2)")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--matmul-n", type=int, default=None, help="side of the peak matmul (default 1024 CPU, 8192 GPU)")
    parser.add_argument("--conv-channels", type=int, default=256, help="channels of the peak 3x3 convolution")
    args = parser.parse_args(argv)
    device = common.setup(args)
    quick = args.quick
    bs = args.batch_size or (32 if quick else 128)
    cifar_bs = args.cifar_batch_size or (2 if quick else 8)
    repeats = args.repeats or (1 if quick else 3)
    steps = {n: 1 if n == "ddpm_unet_cifar10" else (2 if n == "ddpm" else 3) if quick else (4 if n == "ddpm" else 10)
             for n in args.networks}
    peak_n = args.matmul_n or (1024 if device.type == "cpu" else 8192)
    record = common.start_record("flops", args, batch_size=bs, cifar_batch_size=cifar_bs, repeats=repeats, steps=steps,
                                 matmul_n=peak_n)  # fmt: skip
    nets = {name: count_flops(name) for name in args.networks}
    for name, r in nets.items():
        print(f"{name}: {r['parameters'] / 1e6:.2f} M parameters, {r['train_flops_per_image'] / 1e9:.3f} GFLOP per training image")

    loops = {name: train_loop(name, cifar_bs if name == "ddpm_unet_cifar10" else bs, device) for name in args.networks}
    clock = common.primary_clock(device)

    def kernel(fn: Any) -> Any:
        return lambda: {"wall": (r := fn())["flop_per_s"], "cpu": r["flop_per_s_cpu"]}

    cases = {"matmul_peak": kernel(lambda: common.matmul_peak(device, n=peak_n)),
             "conv_peak": kernel(lambda: common.conv_peak(device, channels=args.conv_channels))}  # fmt: skip
    cases.update({name: (lambda loop=loop, s=steps[name]: loop(s, 1)) for name, loop in loops.items()})
    runs = common.interleaved(cases, repeats=repeats, warmup=1)
    times = common.column(runs, clock)
    record["clock"] = clock
    # The best each kernel did in this run: the fractions below are conservative.
    peak, best = max(times["matmul_peak"]), max(max(times["matmul_peak"]), max(times["conv_peak"]))
    record["peak"] = {"matmul_fp32_flop_per_s": common.summary(times["matmul_peak"]),
                      "conv3x3_fp32_flop_per_s": common.summary(times["conv_peak"]),
                      "matmul_used": peak, "best_kernel_used": best,
                      "by_clock": {k: common.per_clock(runs[k]) for k in ("matmul_peak", "conv_peak")}}  # fmt: skip
    if device.type == "cuda":
        record["peak"]["matmul_bf16"] = common.matmul_peak(device, torch.bfloat16, n=peak_n)
    for name, r in nets.items():
        ips = common.median(times[name])
        achieved = r["train_flops_per_image"] * ips
        r.update(batch_size=loops[name].batch_size, train_images_per_s=common.summary(times[name]),
                 train_images_per_s_by_clock=common.per_clock(runs[name]),
                 achieved_flop_per_s=achieved, fraction_of_matmul_peak=achieved / peak,
                 fraction_of_best_kernel_peak=achieved / best)  # fmt: skip
        print(f"{name}: {ips:.1f} img/s -> {achieved / 1e9:.2f} GFLOP/s = {achieved / peak:.1%} of the matmul peak "
              f"{peak / 1e9:.1f} GFLOP/s, {achieved / best:.1%} of the best kernel {best / 1e9:.1f}", flush=True)
    record["networks"] = nets
    common.write_record(record, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
