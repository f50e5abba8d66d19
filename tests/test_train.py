"""train(cfg): every method on fake data, metrics schema, resume, CLI, DDP on CPU, the quick preset."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from automix_lite import MIXERS, TrainConfig, train
from automix_lite.__main__ import main as cli_main
from automix_lite.train import cosine_lr, resolve_amp, summarize

from conftest import fake_config

ROOT = Path(__file__).resolve().parents[1]


def _fake(tmp_path, **kw):
    return fake_config(tmp_path, **{"train_subset": 32, "val_subset": 16, "log_every": 1, "median_last_k": 2, **kw})


@pytest.mark.parametrize("method", ["automix", *MIXERS])
def test_two_steps_of_every_method(tmp_path, method):
    cfg = _fake(tmp_path, method=method, train_subset=16)
    seen = []

    class Spy:
        def on_step_end(self, state):
            seen.append((state.step, state.losses["loss"], None if state.mask is None else state.mask.shape))

    result = train(cfg, callbacks=[Spy()])
    assert [s[0] for s in seen] == [1, 2]
    assert all(math.isfinite(s[1]) for s in seen)
    has_pixel_mask = method not in ("vanilla", "manifoldmix")
    assert (Path(cfg.out) / "masks.png").is_file() == has_pixel_mask
    if method == "automix":
        assert seen[0][2] == (8, 2, 16, 16)
        assert set(result.metrics["final_top1"]) == {"one_k", "mix_k", "one_q", "mix_q"}
    else:
        assert set(result.metrics["final_top1"]) == {"top1"}


def test_metrics_schema_and_files(tmp_path):
    cfg = _fake(tmp_path, epochs=2)
    epochs_seen = []
    result = train(cfg, callbacks=[type("CB", (), {"on_epoch_end": lambda self, s: epochs_seen.append(s.epoch)})()])
    out = Path(cfg.out)
    for name in ("metrics.json", "metrics.jsonl", "checkpoint.pt", "curves.png", "masks.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["history"]) == 2 and epochs_seen == [0, 1]
    assert set(m["median_last_k"]) == {"one_k", "mix_k", "one_q", "mix_q"} and m["k"] == 2
    assert m["best_head"] in m["median_last_k"]
    assert m["best_median_top1"] == max(v for v in m["median_last_k"].values())
    assert {"torch", "timm", "python"} <= set(m["environment"])
    assert m["config"]["method"] == "automix"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert result.history[-1]["val"] == m["final_top1"]


def test_resume_continues_from_saved_step(tmp_path):
    cfg = _fake(tmp_path, epochs=1)
    train(cfg)
    ckpt = torch.load(Path(cfg.out) / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["epoch"] == 1
    steps = []
    res = train(cfg.replace(epochs=2, resume=cfg.out),
                callbacks=[type("CB", (), {"on_step_end": lambda self, s: steps.append(s.step)})()])
    assert steps == [5, 6, 7, 8]
    assert [h["epoch"] for h in res.history] == [1, 2]


def test_cosine_schedule_and_summary():
    assert cosine_lr(0.1, 0.05, 0.0) == 0.1
    assert math.isclose(cosine_lr(0.1, 0.05, 1.0), 0.05)
    assert math.isclose(cosine_lr(0.1, 0.0, 0.5), 0.05)
    assert math.isclose(cosine_lr(0.1, 0.0, 0.05, warmup=0.1), 0.05)
    hist = [{"val": {"a": v, "b": 50.0}} for v in (10.0, 60.0, 70.0, 20.0)]
    s = summarize(hist, ["a", "b"], 3)
    assert s["median_last_k"]["a"] == 60.0 and s["best_head"] == "a"
    assert resolve_amp("auto", torch.device("cpu")) is None


def test_presets_build():
    from automix_lite.trainer.config import PRESETS

    for name in PRESETS:
        cfg = TrainConfig.preset(name)
        assert cfg.preset_name == name and cfg.epochs > 0


def test_imagefolder_path_trains(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = tmp_path / "data" / split / cls
            d.mkdir(parents=True)
            for i in range(6):
                arr = (torch.rand(20, 20, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(d / f"{i}.png")
    cfg = _fake(tmp_path, dataset="folder", data_dir=str(tmp_path / "data"), num_classes=None, train_subset=None,
                val_subset=None, img_size=16, batch_size=4)
    res = train(cfg)
    assert res.info.num_classes == 2 and set(res.metrics["final_top1"]) == set(res.metrics["median_last_k"])


def test_cli_help_lists_presets_and_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--preset" in text and "quick" in text and "--epochs" in text and "--resume" in text


def test_cli_trains_and_evaluates(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(["train", "--preset", "quick", "--dataset", "fake", "--img-size", "16", "--num-classes", "4",
                   "--train-subset", "16", "--val-subset", "8", "--batch-size", "8", "--epochs", "1",
                   "--out", str(out)])
    assert rc == 0 and (out / "metrics.json").is_file()
    rc = cli_main(["eval", "--checkpoint", str(out / "checkpoint.pt")])
    assert rc == 0
    printed = capsys.readouterr().out
    top1 = json.loads(printed[printed.index("{"):])["top1"]
    assert set(top1) == {"one_k", "mix_k", "one_q", "mix_q"}


def test_cli_bad_preset_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        cli_main(["train", "--preset", "cifar1000"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_cpu_ranks_keep_identical_weights(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(
        "import os, torch\n"
        "from automix_lite import TrainConfig, train\n"
        "cfg = TrainConfig.preset('quick', dataset='fake', img_size=16, num_classes=4, train_subset=32,\n"
        f"    val_subset=16, batch_size=8, epochs=1, workers=0, out={str(tmp_path / 'ddp')!r})\n"
        "res = train(cfg)\n"
        "rank = int(os.environ['RANK'])\n"
        f"torch.save(res.model.backbone_q.state_dict(), {str(tmp_path)!r} + f'/rank{{rank}}.pt')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = torch.load(tmp_path / "rank0.pt")
    b = torch.load(tmp_path / "rank1.pt")
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point() and "running" not in k:
            assert torch.equal(a[k], b[k]), k
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["environment"]["world_size"] == 2


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
    out = tmp_path / "quick"
    proc = subprocess.run([sys.executable, "-m", "automix_lite", "train", "--preset", "quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    for name in ("checkpoint.pt", "masks.png", "curves.png"):
        assert (out / name).is_file()
    assert m["best_median_top1"] > 80.0  # digits: 10 classes, chance is 10 %
    assert "best head" in proc.stdout


# ------------------------------------------------------------------ host reads per step (issue: no sync per step)
class _HostReads:
    """Counts conversions to Python numbers (``item``, ``float()``, ``bool()``, ``tolist`` ...) of tensors derived
    from a training batch: the batch is tainted when the step's forward starts and the taint follows every torch
    op, so draws from the CPU generator (λ, permutations) and the weights are not counted; on a GPU each counted
    read is a host-device synchronisation."""

    READS = {"item", "__float__", "__int__", "__bool__", "__index__", "tolist", "numpy", "nonzero", "equal",
             "masked_select", "unique", "unique_consecutive", "argwhere"}

    def __init__(self):
        import weakref

        from torch.overrides import TorchFunctionMode
        from torch.utils._pytree import tree_leaves

        outer, self.count, self._tainted, self._ref = self, 0, {}, weakref.ref

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                hit = any(outer.is_tainted(a) for a in tree_leaves((args, kwargs)))
                if hit and getattr(func, "__name__", "") in outer.READS:
                    outer.count += 1
                result = func(*args, **kwargs)
                if hit:
                    for r in tree_leaves(result):
                        outer.taint(r)
                return result

        self.mode = Mode()

    def taint(self, t) -> None:
        if isinstance(t, torch.Tensor):
            self._tainted[id(t)] = self._ref(t)

    def is_tainted(self, t) -> bool:
        ref = self._tainted.get(id(t)) if isinstance(t, torch.Tensor) else None
        return ref is not None and ref() is t


@pytest.mark.parametrize("method", ["vanilla", "automix", "mixup", "cutmix"])
def test_one_host_read_per_step_except_log_steps(tmp_path, monkeypatch, method):
    import importlib

    engine = importlib.import_module("automix_lite.trainer.engine")
    reads = _HostReads()
    starts, per_step = {}, {}
    orig = engine.StepModule.forward

    def forward(self, x, y, step, total_steps, generator):
        reads.taint(x)
        reads.taint(y)
        starts[step + 1] = reads.count
        return orig(self, x, y, step, total_steps, generator)

    class Count:
        def on_step_end(self, state):
            per_step[state.step] = reads.count - starts[state.step]

    monkeypatch.setattr(engine.StepModule, "forward", forward)
    cfg = _fake(tmp_path, method=method, epochs=2, log_every=3)
    with reads.mode:
        train(cfg, callbacks=[Count()], figures=False, progress="text")  # the bar reads the loss on log steps
    assert sorted(per_step) == list(range(1, 9))
    for step, n in per_step.items():
        # the first step's finite check (no optimizer state yet), then only the logged loss: the non-finite guard
        # skips on the device and reads its counters every log_every steps (issue 29, item 8; test_reliability)
        assert n == (1 if step == 1 or step % 3 == 0 else 0), (step, sorted(per_step.items()))


def test_labels_are_checked_once_per_dataset():
    from types import SimpleNamespace

    from automix_lite.trainer.run import check_labels

    assert check_labels(SimpleNamespace(targets=[0, 3, 1]), 4, "train") is True
    assert check_labels(SimpleNamespace(), 4, "train") is False  # no targets: the per-batch checks stay on
    with pytest.raises(ValueError, match=r"train labels must lie in \[0, 4\), got min 0 max 4"):
        check_labels(SimpleNamespace(targets=torch.tensor([0, 4])), 4, "train")


def test_online_pass_reaches_the_step(monkeypatch):
    """The trainer's step runs the fused pass when cfg.online_pass asks for it (here on the CPU), and the
    readable core step otherwise ("auto" off CUDA, "separate")."""
    import automix_lite.fast.step as fast_step
    from automix_lite.train import build_model
    from automix_lite.trainer.engine import StepModule

    calls = []
    real = fast_step.per_part_batchnorm
    monkeypatch.setattr(fast_step, "per_part_batchnorm", lambda *a, **k: calls.append(1) or real(*a, **k))
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    for mode, want in (("auto", []), ("separate", []), ("fused", [1])):
        cfg = TrainConfig.preset("quick", online_pass=mode)
        calls.clear()
        StepModule(build_model(cfg, 10, 3), cfg)(x, y, 0, 10, torch.Generator().manual_seed(0))
        assert calls == want, mode
    with pytest.raises(ValueError, match="online_pass='fast' is not one of auto, fused, separate"):
        TrainConfig.preset("quick", online_pass="fast")


# ------------------------------------------------------------------ cuda_graph (the eager twin on CPU)
class _Rows:
    def __init__(self):
        self.rows = {}

    def on_step_end(self, state):
        self.rows[state.step] = dict(state.losses)


def test_cuda_graph_twin_in_train_equals_the_eager_step(tmp_path, monkeypatch):
    """On CPU cuda_graph=True runs GraphedStep's eager twin (the code a CUDA graph records): the same draws, losses,
    logged keys and final weights as the ordinary step, to float rounding (the EMA's momentum is a device scalar)."""
    from automix_lite.fast.graphed import GraphedStep

    calls, orig = [], GraphedStep.__call__
    monkeypatch.setattr(GraphedStep, "__call__", lambda self, *a: calls.append(self.use_graph) or orig(self, *a))
    kw = dict(epochs=2, train_subset=24, ema_momentum=0.9, ema_end_momentum=0.99)
    ref, twin = _Rows(), _Rows()
    a = train(_fake(tmp_path / "a", **kw), callbacks=[ref], figures=False)
    assert calls == []
    b = train(_fake(tmp_path / "b", cuda_graph=True, **kw), callbacks=[twin], figures=False)
    assert calls == [False] * 6  # every step went through the twin (no CUDA here)
    assert sorted(twin.rows) == sorted(ref.rows) == list(range(1, 7))
    for step, row in ref.rows.items():
        assert list(twin.rows[step]) == list(row), step
        for k, v in row.items():
            assert math.isclose(v, twin.rows[step][k], rel_tol=1e-5, abs_tol=1e-6), (step, k, v, twin.rows[step][k])
    for k, v in a.model.state_dict().items():
        assert torch.allclose(v.float(), b.model.state_dict()[k].float(), rtol=1e-4, atol=1e-5), k
    assert [h["train"].keys() for h in a.history] == [h["train"].keys() for h in b.history]


def test_cuda_graph_stops_at_a_nonfinite_loss(tmp_path, monkeypatch):
    from automix_lite.fast.graphed import GraphedStep
    from automix_lite.train import NonFiniteLossError

    orig = GraphedStep.__call__

    def poisoned(self, x, y, step, generator=None):
        return orig(self, x * float("nan") if step == 5 else x, y, step, generator)

    monkeypatch.setattr(GraphedStep, "__call__", poisoned)
    cfg = _fake(tmp_path, epochs=2, cuda_graph=True)
    with pytest.raises(NonFiniteLossError, match="cuda_graph=True.*cannot be skipped"):
        train(cfg, figures=False)
    out = Path(cfg.out)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 1  # the epoch-1 checkpoint, intact
    assert not list(out.glob("*interrupt*"))


def test_cuda_graph_refusals():
    from types import SimpleNamespace

    from automix_lite.trainer.run import make_graphed_step

    for kw, fragment in [(dict(method="mixup"), "graphs the AutoMix step only"), (dict(amp="fp16"), "GradScaler"),
                         (dict(compile=True), "alternatives"), (dict(sched_by_epoch=False), "re-capture")]:
        with pytest.raises(ValueError, match=fragment):
            TrainConfig.preset("quick", cuda_graph=True, **kw)
    with pytest.raises(ValueError, match="no DDP"):
        make_graphed_step(SimpleNamespace(distributed=True, amp_dtype=None))
    with pytest.warns(RuntimeWarning, match="cuda_graph=True skipped"):  # a T4 under amp='auto': fp16 eager
        graphed, status = make_graphed_step(SimpleNamespace(distributed=False, amp_dtype=torch.float16))
    assert graphed is None and status.startswith("off: amp='auto' resolved to fp16")


def test_amp_policy_by_bf16_tensor_cores():
    """A T4 (no bf16 tensor cores) gets fp16 under 'auto' and a clear refusal for 'bf16'; Ampere+ gets bf16."""
    from automix_lite.fast.runtime import bf16_native

    gpu = torch.device("cuda", 0)  # a device object only: bf16_ok stands in for the device query
    assert resolve_amp("auto", gpu, bf16_ok=True) == torch.bfloat16
    assert resolve_amp("auto", gpu, bf16_ok=False) == torch.float16
    assert resolve_amp("fp16", gpu, bf16_ok=True) == torch.float16
    assert resolve_amp("bf16", gpu, bf16_ok=True) == torch.bfloat16
    with pytest.raises(ValueError, match="without bf16 tensor cores"):
        resolve_amp("bf16", gpu, bf16_ok=False)
    assert resolve_amp("off", gpu, bf16_ok=True) is None and not bf16_native(torch.device("cpu"))
