"""Provenance of a results file: hardware, versions, command, seed and date (every benchmark writes it)."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys

import torch

import automix_lite


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    info = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def cpu_model(info: dict[str, str] | None = None) -> str:
    """The CPU model as lscpu names it: what ``provenance`` records, and what a check compares with it."""
    info = _lscpu() if info is None else info
    return info.get("Model name", platform.processor() or "unknown")


def provenance(device: torch.device, seed: int, argv: list[str] | None = None) -> dict:
    """Hardware, versions, command, seed and date for a results file."""
    import timm
    import torchvision

    cpu = _lscpu()
    prov = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python"] + (sys.argv if argv is None else argv)),
        "seed": seed,
        "hardware": {
            "cpu_model": cpu_model(cpu),
            "cpu_count_os": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "lscpu_cpus": cpu.get("CPU(s)"),
            "threads_per_core": cpu.get("Thread(s) per core"),
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "versions": {
            "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "automix_lite": automix_lite.__version__, "platform": platform.platform(),
        },
    }
    return prov
