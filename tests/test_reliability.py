"""Reliability of train(): the NaN/Inf guard, crash-safe checkpoints, exact kill-and-resume, re-runnable calls.

Invariants checked: a skipped step changes nothing (weights, BN statistics, optimizer state); the last good
checkpoint survives a NonFiniteLossError byte for byte; a crash inside torch.save never tears checkpoint.pt;
a run interrupted mid-epoch (Ctrl-C, a real SIGINT, or a real SIGTERM to a subprocess) and resumed reproduces
the uninterrupted run's per-step losses to 1e-6 on CPU.
"""
import hashlib
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from automix_lite import TrainConfig, train
from automix_lite.train import NonFiniteLossError, build_model
from automix_lite.trainer.checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint, save_checkpoint

from conftest import StepLosses, fake_config

ROOT = Path(__file__).resolve().parents[1]
train_mod = importlib.import_module("automix_lite.train")  # the module (the package exports the function)


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch):
    """curves.png / masks.png are tested in test_train.py; here they would only cost time."""
    monkeypatch.setattr(train_mod, "_figures", lambda *a, **k: None)


def _cfg(tmp_path, name="run", **kw):
    base = dict(train_subset=32, val_subset=16, method="automix", epochs=2, log_every=1, median_last_k=1,
                ema_momentum=0.9, ema_end_momentum=0.99)
    return fake_config(tmp_path, name, **{**base, **kw})


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


Losses = StepLosses


def _assert_same_losses(ref: dict, got: dict, tol=1e-6):
    assert sorted(got) == sorted(ref)
    for step in ref:
        assert ref[step].keys() == got[step].keys(), step
        for k, v in ref[step].items():
            assert math.isclose(v, got[step][k], rel_tol=0, abs_tol=tol), (step, k, v, got[step][k])


def _poison(monkeypatch, bad_steps: dict):
    """Make the loss non-finite at the given (0-based) steps: 'input' feeds NaN images (BN statistics see
    them), 'loss' multiplies the loss by inf."""
    orig = train_mod._StepModule.forward

    def forward(self, x, y, step, total_steps, generator):
        kind = bad_steps.get(step)
        if kind == "input":
            x = torch.full_like(x, float("nan"))
        losses, mask, perm = orig(self, x, y, step, total_steps, generator)
        if kind == "loss":
            losses = {**losses, "loss": losses["loss"] * float("inf")}
        return losses, mask, perm

    monkeypatch.setattr(train_mod._StepModule, "forward", forward)


# ------------------------------------------------------------------ NaN / Inf guard
@pytest.mark.parametrize("log_every", [1, 100])  # 100: the guard's counters are read once per epoch
def test_nonfinite_steps_are_skipped_counted_and_change_nothing(tmp_path, monkeypatch, log_every):
    _poison(monkeypatch, {5: "input", 6: "loss"})  # epoch 2 (steps 4..7): two bad steps in a row
    states = {}

    class Snap:
        def on_step_end(self, s):
            states[s.step] = {k: v.clone() for k, v in s.model.state_dict().items()}

    cfg = _cfg(tmp_path, max_nonfinite=3, log_every=log_every)
    res = train(cfg, callbacks=[Snap()])
    assert [h["nonfinite"] for h in res.history] == [0, 2]
    assert res.metrics["nonfinite_total"] == 2
    lines = [json.loads(x) for x in (Path(cfg.out) / "metrics.jsonl").read_text().splitlines()]
    assert [r["nonfinite"] for r in lines] == [0, 2]
    # after the skipped steps 6 and 7 (1-based) the weights, BN buffers and EMA encoder equal those after step 5
    for k in states[5]:
        assert torch.equal(states[5][k], states[7][k]), k
        assert torch.isfinite(states[7][k].float()).all(), k
    assert any(not torch.equal(states[7][k], states[8][k]) for k in states[7])  # training went on
    assert all(math.isfinite(v) for v in res.history[-1]["train"].values())
    assert all(math.isfinite(v) for v in res.metrics["final_top1"].values())


@pytest.mark.parametrize("log_every", [1, 100])
def test_consecutive_nonfinite_losses_stop_and_keep_last_checkpoint(tmp_path, monkeypatch, log_every):
    _poison(monkeypatch, {s: "loss" for s in range(4, 8)})  # all of epoch 2
    cfg = _cfg(tmp_path, max_nonfinite=3, log_every=log_every)
    out = Path(cfg.out)
    hashes = {}

    class Hash:
        def on_epoch_end(self, s):
            hashes["ckpt"] = _sha(out / "checkpoint.pt")
            hashes["files"] = sorted(p.name for p in out.iterdir())

    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite losses") as e:
        train(cfg, callbacks=[Hash()])
    assert "intact" in str(e.value) and "resume" in str(e.value)
    assert _sha(out / "checkpoint.pt") == hashes["ckpt"]
    assert sorted(p.name for p in out.iterdir()) == hashes["files"]  # nothing new written
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and ckpt["step"] == 4
    monkeypatch.undo()  # the data is fixed: resume from the last good checkpoint
    res = train(cfg.replace(resume=str(out)))
    assert [h["epoch"] for h in res.history] == [1, 2] and res.history[-1]["nonfinite"] == 0


def test_the_eager_step_reads_nothing_from_the_device_between_log_steps(tmp_path, monkeypatch):
    """Issue 29, item 8: the non-finite guard used to read its flag after every eager step (``bool(isfinite)``),
    so the host could not queue the next step while the device computed; now a step reads nothing from the device
    except every ``log_every`` steps and at the epoch's end (and the run's first step, before the optimizer state
    exists). The skip itself is checked bit for bit by the test above with ``log_every=100``."""
    import automix_lite.trainer.loop as loop

    reads, current = [], {}
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy"):
        orig = getattr(torch.Tensor, name)

        def spy(self, *a, _orig=orig, **k):
            if "step" in current and sys._getframe(1).f_code.co_filename.endswith(os.path.join("trainer", "loop.py")):
                reads.append(current["step"])  # a read by the loop itself (the model's host draws are CPU values)
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, spy)
    real = loop.train_step

    def step(run, x, y, stop):
        current["step"] = run.step
        try:
            return real(run, x, y, stop)
        finally:
            current.pop("step")
    monkeypatch.setattr(loop, "train_step", step)
    train(_cfg(tmp_path, epochs=2, train_subset=64, batch_size=8, log_every=4, method="mixup"))  # 8 steps/epoch
    assert sorted(set(reads) - {0}) == [3, 7, 11, 15], reads  # the guard's reads: steps 4 and 8 of each epoch
    assert len(reads) <= 5  # one each (and the first step's check)


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_holds_everything_needed(tmp_path):
    cfg = _cfg(tmp_path, epochs=1)
    res = train(cfg)
    ckpt = load_checkpoint(Path(cfg.out) / "checkpoint.pt")
    for key in ("model", "optimizer", "scaler", "scheduler", "rng", "step", "epoch", "batch_in_epoch", "config",
                "versions", "history", "num_classes", "loader_generator"):
        assert key in ckpt, key
    assert {"python", "numpy", "torch", "generator"} <= set(ckpt["rng"])
    assert {"automix_lite", "torch", "timm", "python"} <= set(ckpt["versions"])
    assert ckpt["step"] == 4 and ckpt["epoch"] == 1 and ckpt["batch_in_epoch"] == 0
    assert TrainConfig.from_dict(ckpt["config"]) == cfg
    assert all("momentum_buffer" in s for s in ckpt["optimizer"]["state"].values())
    fresh = build_model(cfg, ckpt["num_classes"], 3)
    fresh.load_state_dict(ckpt["model"])
    for k, v in res.model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_atomic_write_survives_a_crash_inside_torch_save(tmp_path, monkeypatch):
    save_checkpoint({"model": {"w": torch.ones(3)}, "step": 1}, tmp_path, tag="a", keep=3)
    before = _sha(tmp_path / "checkpoint.pt")
    real_save = torch.save

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")  # some bytes reach the temporary file, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "step": 2}, tmp_path, tag="b", keep=3)
    monkeypatch.setattr(torch, "save", real_save)
    assert _sha(tmp_path / "checkpoint.pt") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-a.pt", "checkpoint.pt"]  # no temp files
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1


def test_crash_while_refreshing_latest_leaves_no_temp_file(tmp_path, monkeypatch):
    import shutil

    save_checkpoint({"model": {}, "step": 1}, tmp_path, tag="a")
    before = _sha(tmp_path / "checkpoint.pt")

    def crash(src, dst, *a, **k):
        Path(dst).write_bytes(b"partial")
        raise OSError("killed")

    monkeypatch.setattr(shutil, "copyfile", crash)
    with pytest.raises(OSError):
        save_checkpoint({"model": {}, "step": 2}, tmp_path, tag="b")
    assert _sha(tmp_path / "checkpoint.pt") == before
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]


def test_last_k_checkpoints_are_kept(tmp_path):
    for i in range(5):
        save_checkpoint({"model": {}, "step": i}, tmp_path, tag=f"epoch{i:04d}", keep=2)
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*.pt")) == ["checkpoint-epoch0003.pt",
                                                                        "checkpoint-epoch0004.pt"]
    assert load_checkpoint(find_resume_checkpoint(tmp_path))["step"] == 4


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_checkpoint_is_detected_and_the_previous_one_used(tmp_path, capsys):
    for i in (1, 2):
        save_checkpoint({"model": {"w": torch.full((64,), float(i))}, "step": i}, tmp_path, tag=f"epoch{i:04d}")
    _truncate(tmp_path / "checkpoint.pt")
    _truncate(tmp_path / "checkpoint-epoch0002.pt")
    with pytest.warns(UserWarning, match="unreadable; resumed from the older"):
        ckpt = load_checkpoint(find_resume_checkpoint(tmp_path), tmp_path)
    assert ckpt["step"] == 1
    err = capsys.readouterr().err
    assert "checkpoint.pt is unreadable" in err and "trying the previous one" in err
    _truncate(tmp_path / "checkpoint-epoch0001.pt")
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_resume_after_truncation_falls_back_and_rewrites_history(tmp_path, capsys):
    cfg = _cfg(tmp_path, epochs=2)
    train(cfg)
    out = Path(cfg.out)
    _truncate(out / "checkpoint.pt")
    _truncate(out / "checkpoint-epoch0002.pt")
    with pytest.warns(UserWarning, match="resumed from the older"):
        res = train(cfg.replace(epochs=3, resume=str(out)))
    assert "unreadable" in capsys.readouterr().err
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    lines = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == [1, 2, 3]  # the epoch-2 line of the lost checkpoint is not duplicated


# ------------------------------------------------------------------ interrupt and resume (in process)
@pytest.mark.parametrize("method,stop_at", [("automix", 11), ("cutmix", 8)])
def test_keyboard_interrupt_then_resume_reproduces_losses(tmp_path, method, stop_at):
    # digits: augmentation draws from torch's global RNG, so the RNG restore is exercised too
    kw = dict(dataset="digits", num_classes=None, train_subset=64, method=method)
    ref = Losses()
    ref_res = train(_cfg(tmp_path, "ref", **kw), callbacks=[ref])

    first = StepLosses(stop=stop_at)
    cfg = _cfg(tmp_path, "cut", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[first])
    out = Path(cfg.out)
    (interrupt,) = out.glob("checkpoint-interrupt-*.pt")
    ckpt = load_checkpoint(interrupt)
    assert ckpt["step"] == stop_at and ckpt["batch_in_epoch"] == stop_at - 8 * ckpt["epoch"]
    second = Losses()
    res = train(cfg.replace(resume=str(out)), callbacks=[second])
    assert min(second.rows) == stop_at + 1
    _assert_same_losses(ref.rows, {**first.rows, **second.rows})
    # the interrupted epoch's averages and the final weights match too
    for a, b in zip(ref_res.history, res.history):
        for k in a["train"]:
            assert math.isclose(a["train"][k], b["train"][k], abs_tol=1e-6), k
        assert a["val"] == b["val"]
    for k, v in ref_res.model.state_dict().items():
        assert torch.allclose(v.float(), res.model.state_dict()[k].float(), atol=1e-6), k


def test_real_sigint_finishes_the_step_and_saves(tmp_path):
    class CtrlC:
        def on_step_end(self, state):
            if state.step == 3:
                os.kill(os.getpid(), signal.SIGINT)  # the handler only sets a flag: this step completes

    cfg = _cfg(tmp_path)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[CtrlC()])
    assert signal.getsignal(signal.SIGINT) is before  # handler restored
    ckpt = load_checkpoint(Path(cfg.out) / "checkpoint.pt")
    assert ckpt["step"] == 3 and ckpt["epoch"] == 0 and ckpt["batch_in_epoch"] == 3


def test_interrupt_inside_a_step_writes_no_torn_checkpoint(tmp_path, monkeypatch, capsys):
    orig = train_mod._StepModule.forward

    def forward(self, x, y, step, total_steps, generator):
        if step == 5:  # e.g. a second Ctrl-C during the forward pass
            raise KeyboardInterrupt
        return orig(self, x, y, step, total_steps, generator)

    monkeypatch.setattr(train_mod._StepModule, "forward", forward)
    cfg = _cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    out = Path(cfg.out)
    assert not list(out.glob("*interrupt*"))
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1  # the epoch-1 checkpoint is the resume point
    assert "no checkpoint written" in capsys.readouterr().err


# ------------------------------------------------------------------ re-running train() in the same folder
def test_second_new_run_in_the_same_folder_starts_fresh(tmp_path):
    cfg = _cfg(tmp_path, epochs=1)
    train(cfg)
    out = Path(cfg.out)
    res = train(cfg.replace(epochs=2))  # e.g. a notebook cell run twice, no resume
    lines = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines == [1, 2] and [h["epoch"] for h in res.history] == [1, 2]
    assert json.loads((out / "metrics.json").read_text())["config"]["epochs"] == 2
    prev = out / "previous_run"
    assert (prev / "metrics.json").is_file() and (prev / "checkpoint.pt").is_file()
    assert json.loads((prev / "metrics.json").read_text())["config"]["epochs"] == 1
    assert sorted(p.name for p in out.glob("checkpoint-*.pt")) == ["checkpoint-epoch0001.pt",
                                                                   "checkpoint-epoch0002.pt"]
    res3 = train(cfg.replace(epochs=1))  # a third run replaces the older backup
    assert json.loads((prev / "metrics.json").read_text())["config"]["epochs"] == 2
    assert len(res3.history) == 1


# ------------------------------------------------------------------ a real SIGTERM to a subprocess
_CHILD = r'''
import json, sys, time
from pathlib import Path
from automix_lite import TrainConfig, train

mode, out, log, marker = sys.argv[1:5]
cfg = TrainConfig.preset("quick", dataset="digits", img_size=16, train_subset=64, val_subset=16,
                         model="resnet_tiny_cifar", method="automix", epochs=2, batch_size=8, workers=0,
                         amp="off", out=out, ema_momentum=0.9, ema_end_momentum=0.99, median_last_k=1,
                         resume=out if mode == "resume" else None)

class Log:
    def on_step_end(self, state):
        with open(log, "a") as f:
            f.write(json.dumps({"step": state.step, **state.losses}) + "\n")
        if mode == "kill" and state.step >= 11:
            Path(marker).touch()
            time.sleep(0.5)  # slow down so the SIGTERM lands mid-epoch

try:
    train(cfg, callbacks=[Log()])
except KeyboardInterrupt:
    sys.exit(143)
'''


@pytest.mark.slow
def test_sigterm_kill_then_resume_matches_uninterrupted_run(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def run(mode, name, marker=None):
        args = [sys.executable, str(script), mode, str(tmp_path / name), str(tmp_path / f"{name}-{mode}.jsonl"),
                str(marker or tmp_path / "unused")]
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def rows(path):
        return {r.pop("step"): r for r in map(json.loads, Path(path).read_text().splitlines())}

    ref = run("full", "ref")
    marker = tmp_path / "marker"
    child = run("kill", "cut", marker)
    t0 = time.time()
    while not marker.exists():
        assert child.poll() is None, child.communicate()[1][-3000:]
        assert time.time() - t0 < 240, "the child never reached step 11"
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err[-3000:]
    assert "resumable checkpoint written" in err
    killed = rows(tmp_path / "cut-kill.jsonl")
    stop = max(killed)
    assert 8 < stop < 16  # really mid-epoch 2 (8 steps per epoch)
    ckpt = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    assert ckpt["step"] == stop and ckpt["epoch"] == 1 and ckpt["batch_in_epoch"] == stop - 8
    resumed = run("resume", "cut")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-3000:]
    again = rows(tmp_path / "cut-resume.jsonl")
    assert min(again) == stop + 1
    _assert_same_losses(rows(tmp_path / "ref-full.jsonl"), {**killed, **again})
    m_ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    m_cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert m_ref["final_top1"] == m_cut["final_top1"]
