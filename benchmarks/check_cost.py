"""What the first-use check of the fused online pass costs (``trainer/fastpaths.py``), against one training step.

The check runs once per run, where ``online_pass="auto"`` would pick the fused pass (CUDA). Here it is forced on
the current device, and its time is compared with one fused training step of the same model at the training batch,
interleaved, median of 3. Results: ``benchmarks/results/check_cost_<device>.json``::

    python benchmarks/check_cost.py
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import automix_lite.trainer.fastpaths as fastpaths  # noqa: E402
from automix_lite import AutoMix  # noqa: E402
from automix_lite.fast.step import training_step  # noqa: E402

from provenance import provenance  # noqa: E402

CONFIGS = (("resnet_tiny_cifar", 16, 32), ("resnet18_cifar", 32, 32))


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measure(name: str, size: int, n: int, dev: torch.device, rounds: int = 3) -> dict:
    torch.manual_seed(0)
    model = AutoMix(name, 10).to(dev)
    x, y = torch.randn(n, 3, size, size, device=dev), torch.randint(0, 10, (n,), device=dev)
    opt = torch.optim.SGD(model.online_parameters() + model.mix_block_parameters(), lr=0.1)

    def step(i: int) -> None:
        out = training_step(model, x, y, i, 100, generator=torch.Generator().manual_seed(i), online_pass="fused")
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        model.momentum_update(i, 100)

    def timed(fn) -> float:
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        return time.perf_counter() - t0

    step(0)
    steps, checks = [], []
    for r in range(rounds):
        steps.append(timed(lambda: step(r + 1)))
        checks.append(timed(lambda: fastpaths.choose_online_pass("auto", model, dev, (3, size, size), n)))
    s, c = statistics.median(steps), statistics.median(checks)
    return {"model": name, "img_size": size, "train_batch": n, "probe_batch": min(n, 8), "step_s": s,
            "check_s": c, "check_over_step": c / s}


def main(argv: list[str] | None = None) -> dict:
    dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    real = fastpaths.uses_fused
    fastpaths.uses_fused = lambda mode, device: mode in ("auto", "fused")  # force the check on this device
    try:
        rows = [measure(*cfg, dev) for cfg in CONFIGS]
    finally:
        fastpaths.uses_fused = real
    for r in rows:
        print(f"[check_cost] {r['model']}: check {r['check_s']:.3f} s = {r['check_over_step']:.2f} x one step",
              flush=True)
    result = {"benchmark": "check_cost", "provenance": provenance(dev, 0, argv), "rows": rows}
    (HERE / "results" / f"check_cost_{dev.type}.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
