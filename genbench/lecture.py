"""``genbench-lecture`` (``make lecture``): train the lecture's families on identical setups.

Runs ``genbench-train -m experiment=lecture model=<every family in conf/model>`` as one Hydra
multirun, so every family gets the same data, batch size, budget, precision and seed, and
prints where the outputs are.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
FAMILIES = ("gan", "vae", "ddpm")


def available_families() -> list[str]:
    return [f for f in FAMILIES if (CONF_DIR / "model" / f"{f}.yaml").exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output directory (default: outputs/lecture/<date_time>)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.max_steps=100 seed=0,1")
    args = parser.parse_args(argv)
    out = Path(args.out or f"outputs/lecture/{time.strftime('%Y-%m-%d_%H-%M-%S')}").resolve()
    families = available_families()
    cmd = [
        str(Path(sys.executable).parent / "genbench-train"),
        "-m",
        "experiment=lecture",
        f"model={','.join(families)}",
        f"hydra.sweep.dir={out}",
        *args.overrides,
    ]
    print(f"genbench-lecture: training {', '.join(families)} on identical setups -> {out}", flush=True)
    code = subprocess.call(cmd)
    if code == 0:
        print(f"genbench-lecture: done. Runs (checkpoints, results.json, W&B offline runs) are in {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
