"""Fast paths chosen by "auto" prove themselves on first use or step aside (issue 21), tested on the CPU by
injecting failures: ``train()`` finishes, warns once, records the fallback in ``metrics.json``, and its results
equal a run that never tried the fast path."""
import contextlib
import json
import warnings

import pytest
import torch

import automix_lite.fast.step as fast_step
import automix_lite.trainer.data as data_mod
import automix_lite.trainer.fastpaths as fastpaths
from automix_lite import AutoMix, train
from automix_lite.fast import device_data as dd

from conftest import StepLosses, fake_config, pairs


@pytest.fixture
def fused_is_auto(monkeypatch):
    """Make "auto" pick the fused online pass on the CPU, as it does on CUDA."""
    monkeypatch.setattr(fastpaths, "uses_fused", lambda mode, device: mode in ("auto", "fused"))


def _no_split(*a, **k):
    return contextlib.nullcontext()  # BatchNorm then pools the statistics of the 2N batch: wrong numbers


def _raise(*a, **k):
    raise NotImplementedError("'conv2d' not implemented for this dtype on this device (simulated)")


def _illegal_access(*a, **k):
    raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated)")


class _FusedCalls:
    """Spy on ``fast_step.online_features``: how many online passes ran fused (proves which path trained)."""

    def __init__(self, monkeypatch, inner=None):
        self.fused, real = 0, inner or fast_step.online_features

        def spy(m, x, xb, fused):
            self.fused += bool(fused)
            return real(m, x, xb, fused)
        monkeypatch.setattr(fast_step, "online_features", spy)


def _run(tmp_path, name, **kw):
    rec = StepLosses()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(fake_config(tmp_path, name, epochs=2, **kw), callbacks=[rec], figures=False, progress="off")
    fast_warnings = [w for w in caught if issubclass(w.category, fastpaths.FastPathWarning)]
    return rec.rows, result, fast_warnings


def _same(a: dict, b: dict) -> None:
    for (sa, ra), (sb, rb) in pairs(sorted(a.items()), sorted(b.items())):
        assert sa == sb and ra == rb, (sa, ra, rb)


def _same_run(a, b) -> None:
    """Equal final weights (every tensor of the state dict, bit for bit) and equal history (issue 31, item 4)."""
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sorted(sa) == sorted(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), [k for k in sa if not torch.equal(sa[k], sb[k])]
    strip = [[{k: v for k, v in e.items() if k != "time"} for e in r.history] for r in (a, b)]
    assert strip[0] == strip[1] and len(strip[0]) == 2


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16, torch.float16])
def test_the_check_passes_a_sound_fused_pass_and_catches_pooled_statistics_on_every_comparison(monkeypatch,
                                                                                               amp_dtype):
    """Issue 29, item 5: the probe runs in float32 whatever the run's dtype, and pooled BatchNorm fails all three
    comparisons (losses, gradient, update), not only the gradient (before: under bf16 only the gradient caught it)."""
    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", 4)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 4, (8,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert fastpaths.check_fused_pass(model, x, y, amp_dtype) is None
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the run's model untouched
    assert torch.equal(rng, torch.get_rng_state())  # and the run's random stream
    monkeypatch.setattr(fast_step, "per_part_batchnorm", _no_split)
    diffs = fastpaths.fused_pass_differences(model, x, y)
    assert all(diffs[k] > 3 * tol for k, tol in fastpaths.FUSED_TOLERANCE.items()), diffs  # with margin
    reason = fastpaths.check_fused_pass(model, x, y, amp_dtype)
    assert reason is not None and all(f"{k} differ" in reason for k in fastpaths.FUSED_TOLERANCE), reason


@pytest.mark.parametrize("inject", ["raises", "wrong_numbers"])
def test_a_broken_auto_fused_pass_falls_back_with_one_warning_and_equal_results(tmp_path, monkeypatch, fused_is_auto,
                                                                                 inject):
    plain, plain_result, none = _run(tmp_path, "separate", online_pass="separate")
    assert none == [] and plain_result.metrics["fast_paths"]["online_pass"] == "off: online_pass='separate'"
    if inject == "raises":
        real = fast_step.online_features
        monkeypatch.setattr(fast_step, "online_features",
                            lambda m, x, xb, fused: _raise() if fused else real(m, x, xb, fused))
    else:
        monkeypatch.setattr(fast_step, "per_part_batchnorm", _no_split)
    calls = _FusedCalls(monkeypatch)
    rows, result, caught = _run(tmp_path, "auto", online_pass="auto")
    assert len(caught) == 1 and "online_pass='fused'" in str(caught[0].message)  # how to force it
    assert result.metrics["fast_paths"]["online_pass"].startswith("off: check failed")
    assert calls.fused == 1  # the check's one fused pass; no training step ran fused
    _same(rows, plain)  # every step of the run equals the run that never tried the fused pass
    _same_run(result, plain_result)
    on_disk = json.loads((tmp_path / "auto" / "metrics.json").read_text())
    assert on_disk["fast_paths"] == result.metrics["fast_paths"]


def test_a_sound_auto_fused_pass_is_used_and_recorded(tmp_path, monkeypatch, fused_is_auto, capsys):
    calls = _FusedCalls(monkeypatch)
    rows, result, caught = _run(tmp_path, "auto", online_pass="auto")
    assert caught == [] and result.metrics["fast_paths"]["online_pass"].startswith("on (checked")
    assert calls.fused == 1 + len(rows) == 1 + 4  # the check's pass, then every training step (2 epochs x 2)
    assert "[automix_lite] fast paths: " in capsys.readouterr().out


@pytest.mark.parametrize("error", ["illegal_access", "accelerator_error"])
def test_a_device_fault_in_the_fused_check_propagates_with_its_message(tmp_path, monkeypatch, fused_is_auto, error):
    """Issue 29, item 6: a sticky device error is not a reason to fall back (the run would die at its next CUDA
    call with a confusing error): it is re-raised unchanged."""
    if error == "accelerator_error":
        accel = getattr(torch, "AcceleratorError", None)
        if accel is None:
            pytest.skip("this torch has no torch.AcceleratorError")

        def fault(*a, **k):
            raise accel("CUDA error: device-side assert triggered (simulated)")
    else:
        fault = _illegal_access
    real = fast_step.online_features
    monkeypatch.setattr(fast_step, "online_features", lambda m, x, xb, fused: fault() if fused else real(m, x, xb, fused))
    with pytest.raises(RuntimeError, match=r"(illegal memory access|device-side assert).*\(simulated\)"):
        train(fake_config(tmp_path, online_pass="auto"), figures=False, progress="off")


def test_out_of_memory_in_the_fused_check_frees_the_cache_and_falls_back(tmp_path, monkeypatch, fused_is_auto):
    freed = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
    real = fast_step.online_features
    monkeypatch.setattr(fast_step, "online_features", lambda m, x, xb, fused: oom() if fused else real(m, x, xb, fused))
    with pytest.warns(fastpaths.FastPathWarning, match="OutOfMemoryError"):
        mode, status = fastpaths.choose_online_pass("auto", AutoMix("resnet_tiny_cifar", 4), torch.device("cpu"),
                                                    (3, 16, 16), 4)
    assert mode == "separate" and "OutOfMemoryError" in status and freed


def test_is_device_error_tells_faults_from_what_a_fast_path_can_cause():
    assert fastpaths.is_device_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert fastpaths.is_device_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert not fastpaths.is_device_error(torch.OutOfMemoryError("CUDA out of memory"))
    assert not fastpaths.is_device_error(RuntimeError("CUDA error: out of memory"))
    assert not fastpaths.is_device_error(NotImplementedError("not implemented for 'BFloat16'"))
    assert not fastpaths.is_device_error(RuntimeError("fused pass differs"))


def test_an_explicit_fused_pass_is_not_checked_and_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(fast_step, "online_features", _raise)
    with pytest.raises(RuntimeError, match="simulated"):
        train(fake_config(tmp_path, online_pass="fused"), figures=False, progress="off")


def _device_data_wanted(monkeypatch):
    monkeypatch.setattr(dd, "wanted", lambda setting, device, nbytes: setting in (True, "auto"))


@pytest.mark.parametrize("inject", ["out_of_memory", "wrong_pixels"])
def test_auto_data_on_device_falls_back_to_the_dataloader(tmp_path, monkeypatch, inject):
    loader, loader_result, _ = _run(tmp_path, "loader", data_on_device=False)
    _device_data_wanted(monkeypatch)
    if inject == "out_of_memory":
        def oom(*a, **k):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        monkeypatch.setattr(data_mod, "device_images", oom)
    else:
        real = dd.DeviceImages.batch
        monkeypatch.setattr(dd.DeviceImages, "batch", lambda self, i, p: real(self, i, p) + 0.1)
    batches = []
    real_iter = dd.DeviceLoader.__iter__
    monkeypatch.setattr(dd.DeviceLoader, "__iter__", lambda self: batches.append(1) or real_iter(self))
    rows, result, caught = _run(tmp_path, "auto", data_on_device="auto")
    assert len(caught) == 1 and "data_on_device=True" in str(caught[0].message)
    assert result.metrics["fast_paths"]["data_on_device"].startswith("off: check failed")
    assert batches == []  # no epoch read the device loader: the DataLoader trained
    _same(rows, loader)
    _same_run(result, loader_result)


def test_auto_data_on_device_that_passes_its_check_is_used(tmp_path, monkeypatch):
    _device_data_wanted(monkeypatch)
    loaders = []
    real_iter = dd.DeviceLoader.__iter__
    monkeypatch.setattr(dd.DeviceLoader, "__iter__", lambda self: loaders.append(self.drop_last) or real_iter(self))
    _, result, caught = _run(tmp_path, "auto", data_on_device="auto")
    assert caught == [] and result.metrics["fast_paths"]["data_on_device"] == "on (checked against the dataset)"
    assert loaders.count(True) == 2  # both training epochs read the device loader (the train one drops the last)


def test_a_device_fault_while_decoding_propagates(tmp_path, monkeypatch):
    _device_data_wanted(monkeypatch)
    monkeypatch.setattr(data_mod, "device_images", _illegal_access)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        train(fake_config(tmp_path, data_on_device="auto"), figures=False, progress="off")


def test_explicit_data_on_device_raises_when_decoding_runs_out_of_memory(tmp_path, monkeypatch):
    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
    monkeypatch.setattr(data_mod, "device_images", oom)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        train(fake_config(tmp_path, data_on_device=True), figures=False, progress="off")


def test_layers_the_fused_pass_cannot_split_turn_auto_off_and_refuse_fused(fused_is_auto):
    model = AutoMix("resnet_tiny_cifar", 4)
    assert fastpaths.choose_online_pass("auto", model, torch.device("cpu"), (3, 16, 16), 4)[0] == "fused"
    model.backbone_q.extra_norm = torch.nn.InstanceNorm2d(8, track_running_stats=True)  # pools running stats
    mode, status = fastpaths.choose_online_pass("auto", model, torch.device("cpu"), (3, 16, 16), 4)
    assert mode == "separate" and "extra_norm: InstanceNorm2d" in status
    with pytest.raises(ValueError, match="cannot split"):
        fastpaths.choose_online_pass("fused", model, torch.device("cpu"), (3, 16, 16), 4)


def test_graph_blockers_and_the_per_step_recapture_warning():
    from automix_lite.fast.graphed import GraphedStep, graph_blockers

    model = AutoMix("resnet_tiny_cifar", 4)
    assert graph_blockers(model) == []
    model.backbone_q.bn1.momentum = None  # a cumulative average: reads num_batches_tracked on the host
    assert graph_blockers(model) == ["backbone_q.bn1: BatchNorm2d(momentum=None) (a cumulative average reads "
                                     "num_batches_tracked on the host; give it a momentum)"]
    step = GraphedStep(model, torch.optim.SGD(model.online_parameters(), lr=0.1), total_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in (1, 3, 5, 6, 7):  # changes with gaps: a per-epoch schedule
            step.calls = call
            step._note_recapture()
    with pytest.warns(RuntimeWarning, match="changed on every one of the last 4 steps"):
        step.calls = 8  # 5, 6, 7, 8: four consecutive changes
        step._note_recapture()


def test_the_graphed_path_reads_the_device_every_log_every_steps_not_every_step(tmp_path, monkeypatch):
    import automix_lite.trainer.loop as loop

    reads = []
    monkeypatch.setattr(loop, "_read_flag", lambda flag: reads.append(1) or bool(flag))
    cfg = fake_config(tmp_path, epochs=2, train_subset=64, batch_size=8, cuda_graph=True, log_every=4)  # 8 steps/epoch
    train(cfg, figures=False, progress="off")
    assert len(reads) == 4  # steps 4 and 8 of each epoch, not 16 reads


def test_the_live_view_sums_losses_without_reading_them_each_step():
    from types import SimpleNamespace

    from automix_lite.fast.runtime import LazyScalars
    from automix_lite.views.live import LiveView
    from automix_lite.views.viz import real_photos

    live = LiveView(real_photos(16), (0.5,), (0.25,), every=3, show=False)
    steps = []
    for step, loss in enumerate([1.0, float("nan"), 3.0], start=1):
        losses = LazyScalars({"loss": torch.tensor(loss), "loss_mask": torch.tensor(0.5)})
        state = SimpleNamespace(losses=losses, step=step, total_steps=10, epoch=0,
                                model=torch.nn.Linear(1, 1))  # no Mix Block: curves only
        steps.append(losses)
        live.on_step_end(state)
    assert all(s._values is None for s in steps)  # no step's losses were copied to the host
    assert live.points == [(3, {"loss": 2.0, "loss_mask": 0.5})]  # the NaN step left out of the mean


def test_an_explicit_graph_step_that_fails_mid_epoch_stops_resumably(tmp_path, monkeypatch):
    """cuda_graph=True is explicit: a failing capture / replay (injected at step 5, in epoch 2) stops the run with
    a clear error; the epoch-1 checkpoint is intact and the run resumes eagerly to the end."""
    import automix_lite.trainer.loop as loop
    from automix_lite.fast.graphed import GraphedStep

    real = GraphedStep.__call__

    def failing(self, x, y, step, generator=None):
        if step == 5:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing (simulated)")
        return real(self, x, y, step, generator)

    monkeypatch.setattr(GraphedStep, "__call__", failing)
    cfg = fake_config(tmp_path, epochs=3, train_subset=32, batch_size=8, cuda_graph=True)  # 4 steps per epoch
    with pytest.raises(loop.GraphStepError, match="resume from it with cuda_graph=False"):
        train(cfg, figures=False, progress="off")
    resumed = train(cfg.replace(cuda_graph=False, resume=cfg.out), figures=False, progress="off")
    assert [e["epoch"] for e in resumed.history] == [1, 2, 3]
    # and it equals a run that never failed (issue 31, item 4): epoch 1 graphed, then eager from its checkpoint
    # (the graph's CPU twin and the eager step differ in the last bits, so the paths must match epoch by epoch)
    monkeypatch.undo()
    class StopAfterEpoch1:
        def on_epoch_end(self, state):
            raise KeyboardInterrupt

    whole_cfg = cfg.replace(out=str(tmp_path / "whole"))
    with pytest.raises(KeyboardInterrupt):
        train(whole_cfg, [StopAfterEpoch1()], figures=False, progress="off")
    whole = train(whole_cfg.replace(cuda_graph=False, resume=whole_cfg.out), figures=False, progress="off")
    strip = [[{k: v for k, v in e.items() if k != "time"} for e in r.history] for r in (resumed, whole)]
    assert strip[0] == strip[1]
    sa, sb = resumed.model.state_dict(), whole.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and sorted(sa) == sorted(sb)
