"""Where and how a run executes: the device, the autocast dtype, the progress-bar mode, DDP set-up, signals.

Pure decisions first (``resolve_device``, ``resolve_amp``, ``progress_mode``: every input is an argument with a
default read from the machine, so each is unit-tested without a GPU or a notebook), then the small stateful
pieces the loop uses (``Interrupt``, ``read_scalars``, ``seed_everything``, ``init_distributed``).
"""
from __future__ import annotations

import os
import random
import signal
import sys
import threading
import warnings
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DeviceUnavailableError", "resolve_device", "resolve_amp", "bf16_native", "progress_mode", "PROGRESS_MODES",
           "Interrupt", "read_scalars", "LazyScalars", "seed_everything", "init_distributed", "dist_env"]

PROGRESS_MODES = ("auto", "notebook", "text", "off")


# ------------------------------------------------------------------ device and precision
class DeviceUnavailableError(RuntimeError):
    """The configured device (CUDA, a CUDA index, MPS) does not exist on this machine."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(spec: str, *, local_rank: int | None = None, cuda_available: bool | None = None,
                   device_count: int | None = None, current_device: int | None = None,
                   mps_available: bool | None = None) -> torch.device:
    """The ``torch.device`` a run uses for ``TrainConfig.device``, always with an index on CUDA (what
    ``torch.cuda.set_device`` and DDP need).

    ``'auto'``: ``cuda:<LOCAL_RANK>`` (``torchrun``) or the current CUDA device when CUDA exists, else ``'cpu'``
    (MPS only when asked for: not every op of every backbone runs there). ``'cuda'``: ``cuda:<LOCAL_RANK>`` under
    ``torchrun``, else the current device. ``'cuda:N'``: that GPU. ``'mps'``, ``'cpu'``: as written.

    Args:
        spec: ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.
        local_rank: this process's GPU slot under ``torchrun`` (None = not launched by torchrun).
        cuda_available, device_count, current_device, mps_available: the machine (None = ask torch).

    Raises:
        DeviceUnavailableError (a RuntimeError): a CUDA / MPS device asked for where none exists, or a CUDA
            index beyond the GPUs present.
        ValueError: an unknown spelling.
    """
    spec = spec.strip().lower()
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if spec == "auto":
        if not cuda_available:
            return torch.device("cpu")
        spec = "cuda"
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not (_mps_available() if mps_available is None else mps_available):
            raise DeviceUnavailableError("device='mps' was asked for, but this PyTorch build or machine has no MPS "
                                         "(Apple GPU) backend; use device='cpu' or 'auto'.")
        return torch.device("mps")
    if spec != "cuda" and not spec.startswith("cuda:"):
        raise ValueError(f"device={spec!r} should be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    if not cuda_available:
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DeviceUnavailableError(
            f"device={spec!r} was asked for, but no CUDA GPU is visible (torch {torch.__version__}, {build}; "
            "torch.cuda.is_available() is False). Use device='auto' (GPU when present, else CPU) or 'cpu'; on Colab "
            "pick a GPU runtime.")
    count = torch.cuda.device_count() if device_count is None else device_count
    if spec == "cuda":
        if local_rank is not None:
            index = local_rank
        else:
            index = torch.cuda.current_device() if current_device is None else current_device
    else:
        index = int(spec.split(":", 1)[1])
    if not 0 <= index < count:
        raise DeviceUnavailableError(
            f"device {spec!r} resolves to cuda:{index}, but only {count} CUDA device(s) are visible "
            f"(cuda:0..cuda:{max(count - 1, 0)}); check CUDA_VISIBLE_DEVICES and --nproc_per_node.")
    return torch.device("cuda", index)


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` has bf16 tensor cores (CUDA compute capability >= 8), emulation not counted: a T4 (7.5)
    accepts bf16 tensors but computes them slowly."""
    if device.type != "cuda":
        return False
    try:
        with torch.cuda.device(device):
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.4: no including_emulation argument; the capability is the rule
        return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_amp(amp: str, device: torch.device, *, bf16_ok: bool | None = None) -> torch.dtype | None:
    """Autocast dtype: None on CPU or with ``amp='off'``; 'auto' = bf16 where the GPU has bf16 tensor cores
    (``bf16_native``), else fp16 (a T4: fp16 with a GradScaler). ``amp='bf16'`` on a GPU without them is refused
    (emulated bf16 is slower than fp32). ``bf16_ok`` overrides the device query (tests)."""
    if amp in ("bf16", "fp16") and device.type != "cuda":
        warnings.warn(f"amp={amp!r} runs only on CUDA; on {device.type} this run computes in float32 "
                      "(set amp='off' or 'auto' to silence this)", RuntimeWarning, stacklevel=2)
    if amp == "off" or device.type != "cuda":
        return None
    native = bf16_native(device) if bf16_ok is None else bf16_ok
    if amp == "bf16" and not native:
        raise ValueError("amp='bf16' on a GPU without bf16 tensor cores (compute capability < 8, e.g. Colab's T4) "
                         "would run emulated, slower than float32; use amp='auto' (fp16 there) or 'fp16'.")
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    return torch.bfloat16 if native else torch.float16


# ------------------------------------------------------------------ progress bar
def _shell_name() -> str | None:
    """Class names of the running IPython shell and its bases, joined ('' outside IPython)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        shell = ipython.get_ipython()
    except Exception:  # noqa: BLE001 - a broken IPython install must not break training
        return None
    return None if shell is None else " ".join(c.__name__ for c in type(shell).__mro__)


def _has_ipywidgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def progress_mode(requested: str = "auto", *, rank: int = 0, shell: str | None = None, stderr_tty: bool | None = None,
                  env: Mapping[str, str] | None = None, widgets: bool | None = None) -> str:
    """Which progress bar ``train`` shows: ``'notebook'`` (tqdm's widget bar), ``'text'`` or ``'off'``.

    ``'auto'``: nothing on ranks other than 0 or when ``AUTOMIX_PROGRESS=off``; the widget bar inside a Jupyter /
    Colab kernel (an ``ipykernel`` shell; the text bar there when ipywidgets is missing); the text bar when stderr is
    a terminal; nothing otherwise (CI logs, redirected output). ``AUTOMIX_PROGRESS`` (``notebook|text|off``)
    overrides the automatic choice; an explicit ``requested`` mode overrides both (rank 0 only).

    Args:
        requested: one of ``PROGRESS_MODES``.
        rank: the DDP rank. shell: class names of the IPython shell (None = detect). stderr_tty: whether stderr is
        a terminal (None = detect). env: environment (None = ``os.environ``). widgets: ipywidgets importable.
    """
    if requested not in PROGRESS_MODES:
        raise ValueError(f"progress={requested!r} should be one of {', '.join(PROGRESS_MODES)}.")
    if rank != 0:
        return "off"
    env = os.environ if env is None else env
    forced = env.get("AUTOMIX_PROGRESS", "").strip().lower()
    if requested == "auto" and forced in PROGRESS_MODES[1:]:
        requested = forced
    if requested != "auto":
        return requested
    shell = _shell_name() if shell is None else shell
    if shell and "ZMQInteractiveShell" in shell:  # Jupyter, JupyterLab, VS Code, Colab: an ipykernel shell
        return "notebook" if (_has_ipywidgets() if widgets is None else widgets) else "text"
    if stderr_tty is None:
        stderr_tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
    return "text" if stderr_tty else "off"


# ------------------------------------------------------------------ host reads, signals, seeds, DDP
def read_scalars(values: Mapping[str, Any]) -> dict[str, float]:
    """Python floats of 0-d tensors / numbers with one device-to-host copy per device (not one per value)."""
    out: dict[str, float] = {}
    by_device: dict[torch.device, list[str]] = {}
    for k, v in values.items():
        if torch.is_tensor(v):
            by_device.setdefault(v.device, []).append(k)
        else:
            out[k] = float(v)
    for keys in by_device.values():
        stacked = torch.stack([values[k].detach().to(torch.float64) for k in keys])  # [len(keys)]
        out.update(zip(keys, stacked.tolist()))
    return {k: out[k] for k in values}


class LazyScalars(Mapping):
    """A read-only ``{name: float}`` over 0-d tensors that copies them to the host on first access only, so a
    step whose callbacks never look at the losses never waits for the device."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._tensors, self._values = dict(tensors), None

    def _read(self) -> dict[str, float]:
        if self._values is None:
            self._values = read_scalars(self._tensors)
        return self._values

    def __getitem__(self, key: str) -> float:
        return self._read()[key]

    def tensors(self) -> dict[str, torch.Tensor]:
        """The 0-d tensors themselves (no read: for callbacks that sum on the device)."""
        return dict(self._tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __repr__(self) -> str:
        return f"LazyScalars({self._read()!r})"


class Interrupt:
    """Turns SIGTERM and the first Ctrl-C (SIGINT) into a flag checked between steps, so the step in flight
    finishes and the checkpoint is consistent; a second Ctrl-C raises ``KeyboardInterrupt`` at once."""

    def __init__(self):
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if signum == signal.SIGINT:
            print("\n[automix_lite] interrupt: finishing the current step, then writing a resumable checkpoint "
                  "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dist_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int | None]:
    """``(rank, world_size, local_rank)`` from torchrun's variables; ``local_rank`` None outside torchrun."""
    env = os.environ if env is None else env
    local = env.get("LOCAL_RANK")
    return int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), None if local is None else int(local)


def init_distributed(device: torch.device, world_size: int) -> bool:
    """Join the process group (nccl on CUDA, gloo otherwise) when ``world_size > 1`` and none exists yet.
    Returns True when this call created it (the caller destroys it)."""
    if world_size <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True
