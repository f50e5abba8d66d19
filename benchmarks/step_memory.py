"""Peak memory of one AutoMix training step (forward + backward) at ImageNet size, per image, on this machine.

Each configuration runs in its own process (the peak resident set size, ``ru_maxrss``, only grows); the per-image
cost is the difference between batch 16 and batch 8, divided by 8. On a GPU ``benchmarks/gpu_accept.py`` reports
``torch.cuda.max_memory_allocated`` instead. Results: ``benchmarks/results/step_memory_<device>.json``::

    python benchmarks/step_memory.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
PROBE = """
import json, resource, sys
import automix_lite, torch
from automix_lite import AutoMix
from automix_lite.fast.step import training_step
torch.set_num_threads(2)
name, n = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = AutoMix(name, 1000, lam_concat=True)
x, y = torch.randn(n, 3, 224, 224), torch.randint(0, 1000, (n,))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
training_step(model, x, y, 0, 100, generator=torch.Generator().manual_seed(0), online_pass="fused")["loss"].backward()
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "step_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))
"""


def measure(model: str, n: int) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, model, str(n)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    sys.path.insert(0, str(HERE))
    import torch

    from provenance import provenance

    rows = []
    for model in ("resnet18", "resnet50"):
        small, large = measure(model, 8), measure(model, 16)
        rows.append({"model": model, "batch_8": small, "batch_16": large,
                     "mb_per_image": (large["step_mb"] - small["step_mb"]) / 8})
        print(f"[step_memory] {model}: {rows[-1]['mb_per_image']:.0f} MB per image", flush=True)
    result = {"benchmark": "step_memory", "provenance": provenance(torch.device("cpu"), 0, argv),
              "setting": "AutoMix step, fused online pass, lam_concat, float32, 224 px, 1000 classes", "rows": rows}
    out = HERE / "results" / "step_memory_cpu.json"
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
