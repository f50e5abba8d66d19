"""Where a run executes, decided without a GPU or a browser: every device spelling (issue: ``device="cuda"``
crashed in ``torch.cuda.set_device``), clear errors for absent devices, and the progress-bar mode (the widget bar
in a Jupyter kernel, checked from a real kernel; a text bar in a terminal; nothing in logs)."""
import json
import os
from pathlib import Path

import pytest
import torch

from automix_lite import TrainConfig, train
from automix_lite.__main__ import main as cli_main
from automix_lite.fast.runtime import (
    DeviceUnavailableError,
    LazyScalars,
    dist_env,
    progress_mode,
    read_scalars,
    resolve_device,
)
from automix_lite.trainer.callbacks import ProgressBar

from conftest import fake_config

ROOT = Path(__file__).resolve().parents[1]
GPU2 = dict(cuda_available=True, device_count=2, current_device=0)


# ------------------------------------------------------------------ device resolution (pure)
@pytest.mark.parametrize("spec,kw,expected", [
    ("auto", dict(cuda_available=False), "cpu"),
    ("auto", GPU2, "cuda:0"),
    ("auto", dict(GPU2, local_rank=1), "cuda:1"),
    ("cuda", GPU2, "cuda:0"),
    ("cuda", dict(GPU2, current_device=1), "cuda:1"),
    ("cuda", dict(GPU2, local_rank=1), "cuda:1"),
    ("cuda:1", GPU2, "cuda:1"),
    ("cuda:1", dict(GPU2, local_rank=0), "cuda:1"),
    ("CUDA", GPU2, "cuda:0"),
    ("cpu", GPU2, "cpu"),
    ("cpu", dict(cuda_available=False), "cpu"),
    ("mps", dict(cuda_available=False, mps_available=True), "mps"),
])
def test_every_device_spelling_resolves(spec, kw, expected):
    dev = resolve_device(spec, **kw)
    assert dev == torch.device(expected)
    if dev.type == "cuda":
        assert dev.index is not None  # what torch.cuda.set_device and DDP's device_ids need


@pytest.mark.parametrize("spec,kw,fragment", [
    ("cuda", dict(cuda_available=False), "no CUDA GPU is visible"),
    ("cuda:0", dict(cuda_available=False), "Use device='auto'"),
    ("cuda:2", GPU2, "only 2 CUDA device(s) are visible"),
    ("cuda", dict(GPU2, local_rank=3), "resolves to cuda:3"),
    ("auto", dict(GPU2, local_rank=2), "CUDA_VISIBLE_DEVICES"),
    ("mps", dict(cuda_available=False, mps_available=False), "no MPS"),
])
def test_absent_devices_are_clear_errors(spec, kw, fragment):
    with pytest.raises(DeviceUnavailableError) as e:
        resolve_device(spec, **kw)
    assert fragment in str(e.value)
    assert isinstance(e.value, RuntimeError)


def test_unknown_spelling_is_a_value_error():
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        resolve_device("gpu", cuda_available=False)


def test_dist_env_reads_torchrun_variables():
    assert dist_env({}) == (0, 1, None)
    assert dist_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("spec,local_rank,expected", [("cuda", None, 0), ("cuda", "1", 1), ("auto", None, 0),
                                                      ("cuda:1", None, 1)])
def test_train_gives_set_device_an_index(tmp_path, monkeypatch, spec, local_rank, expected):
    """The issue's crash: train(device='cuda') passed a bare 'cuda' to torch.cuda.set_device."""
    seen = []

    def set_device(dev):
        seen.append(dev)
        raise _Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    if local_rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    with pytest.raises(_Stop):
        train(TrainConfig.preset("quick", device=spec, out=str(tmp_path / "r")))
    assert seen == [torch.device("cuda", expected)]


def test_cuda_without_a_gpu_is_a_clear_error_in_train_and_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU is visible"):
        train(TrainConfig.preset("quick", device="cuda", out=str(tmp_path / "r")))
    rc = cli_main(["train", "--preset", "quick", "--device", "cuda:0", "--out", str(tmp_path / "c")])
    assert rc == 1
    assert "automix_lite: error: device='cuda:0' was asked for, but no CUDA GPU" in capsys.readouterr().err


# ------------------------------------------------------------------ progress bar mode (pure)
JUPYTER = "ZMQInteractiveShell InteractiveShell SingletonConfigurable"
COLAB = "Shell ZMQInteractiveShell InteractiveShell"  # google.colab's shell subclasses ipykernel's
TERMINAL_IPYTHON = "TerminalInteractiveShell InteractiveShell"


@pytest.mark.parametrize("kw,expected", [
    (dict(shell=JUPYTER, stderr_tty=False, widgets=True), "notebook"),
    (dict(shell=COLAB, stderr_tty=False, widgets=True), "notebook"),
    (dict(shell=JUPYTER, stderr_tty=False, widgets=False), "text"),  # no ipywidgets: tqdm's widget would fail
    (dict(shell=TERMINAL_IPYTHON, stderr_tty=True), "text"),
    (dict(shell="", stderr_tty=True), "text"),  # python -m automix_lite in a terminal
    (dict(shell="", stderr_tty=False), "off"),  # CI logs, output redirected to a file
    (dict(shell=JUPYTER, stderr_tty=True, widgets=True, rank=1), "off"),  # DDP: rank 0 only
    (dict(shell="", stderr_tty=True, env={"AUTOMIX_PROGRESS": "off"}), "off"),
    (dict(shell="", stderr_tty=False, env={"AUTOMIX_PROGRESS": "text"}), "text"),
    (dict(requested="text", shell=JUPYTER, stderr_tty=False, env={"AUTOMIX_PROGRESS": "off"}), "text"),
    (dict(requested="off", shell=JUPYTER, widgets=True), "off"),
])
def test_progress_mode(kw, expected):
    kw.setdefault("env", {})
    assert progress_mode(kw.pop("requested", "auto"), **kw) == expected


def test_progress_mode_rejects_unknown_modes():
    with pytest.raises(ValueError, match="should be one of auto, notebook, text, off"):
        progress_mode("fancy")


def _fake_cfg(tmp_path, **kw):
    return fake_config(tmp_path, **{"method": "mixup", **kw})


def test_text_bar_in_a_terminal_nothing_in_logs(tmp_path, capsys):
    train(_fake_cfg(tmp_path), figures=False, progress="text")
    assert "epoch 1/1" in capsys.readouterr().err
    train(_fake_cfg(tmp_path), figures=False, progress="auto")  # pytest's captured stderr is not a terminal
    assert "epoch 1/1" not in capsys.readouterr().err


def test_progress_bar_closes_at_the_end_of_each_epoch(tmp_path):
    bar = ProgressBar("text")
    seen = []

    class Watch:
        def on_step_end(self, state):
            seen.append(bar.bar is None)

    train(_fake_cfg(tmp_path, epochs=2), callbacks=[bar, Watch()], figures=False, progress="off")
    assert seen == [False, True, False, True]  # 2 steps per epoch; closed after the last one


def test_read_scalars_and_lazy_losses():
    vals = {"a": torch.tensor(1.5), "b": 2, "c": torch.tensor(3.0, dtype=torch.float64)}
    assert read_scalars(vals) == {"a": 1.5, "b": 2.0, "c": 3.0}
    lazy = LazyScalars({"loss": torch.tensor(0.25)})
    assert dict(lazy) == {"loss": 0.25} and lazy["loss"] == 0.25 and len(lazy) == 1 and "loss" in lazy


# ------------------------------------------------------------------ from a real Jupyter kernel
_NB_CELLS = [
    "import sys\nsys.path.insert(0, {root!r})\nfrom automix_lite.fast.runtime import progress_mode\nprint(progress_mode())",
    "from automix_lite import TrainConfig, train\n"
    "cfg = TrainConfig.preset('quick', dataset='fake', img_size=16, num_classes=4, train_subset=16, val_subset=8,\n"
    "    model='resnet_tiny_cifar', method='mixup', epochs=1, batch_size=8, out={out!r})\n"
    "res = train(cfg, figures=False)\n"
    "print(len(res.history))",
]


def test_notebook_kernel_shows_the_widget_bar(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets")
    monkeypatch.delenv("AUTOMIX_PROGRESS", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.format(root=str(ROOT), out=str(tmp_path / "nb"))) for c in _NB_CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    first, second = nb.cells[0].outputs, nb.cells[1].outputs
    assert [o.get("text", "").strip() for o in first if o.output_type == "stream"] == ["notebook"]
    widgets = [o for o in second if o.output_type == "display_data"
               and "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, json.dumps([o.get("output_type") for o in second])  # tqdm.notebook's bar was displayed
    assert "1" in "".join(o.get("text", "") for o in second if o.output_type == "stream")
    assert os.path.isfile(tmp_path / "nb" / "metrics.json")
