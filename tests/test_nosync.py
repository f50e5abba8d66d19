"""No host-device synchronisation per step: the training step and the mixers never read batch-derived data.

On CPU there is no device to wait for, so the tests count what would wait on one: every conversion of a
tensor that is not host-side to a Python value (``item``/``int``/``float``/``bool``, ``torch.equal``,
``nonzero`` and other data-dependent shapes, ``tolist``/``numpy``). Host-side tensors are those made inside
the step by factory ops and draws from the (CPU) generator, and everything computed only from them; the batch,
the parameters and anything ``_to_device`` moved count as device tensors. With CUDA present, the same calls
also run under ``torch.cuda.set_sync_debug_mode("error")``.
"""
from functools import partial

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary

import automix_lite.core.automix as automix_mod
import automix_lite.core.masks as masks_mod
import automix_lite.core.mixing as mixing_mod
from automix_lite.core.automix import AutoMix
from automix_lite.core.mixing import MIXERS, mix, mix_loss

aten = torch.ops.aten
READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default, aten.nonzero.default,
         aten.masked_select.default, aten.unique_consecutive.default, aten._unique2.default}


class DeviceReads(TorchDispatchMode):
    """Counts reads of device-side tensors (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self.host = WeakTensorKeyDictionary()  # tensor -> True when host-side
        self.reads: list[str] = []

    def is_host(self, t) -> bool:
        return self.host.get(t, False)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = torch.utils._pytree.tree_leaves((args, kwargs))
        tensors = [a for a in flat if isinstance(a, torch.Tensor)]
        if func in READS and not all(self.is_host(t) for t in tensors):
            self.reads.append(str(func))
        out = func(*args, **kwargs)
        host = all(self.is_host(t) for t in tensors)
        for o in torch.utils._pytree.tree_leaves(out):
            if isinstance(o, torch.Tensor):
                self.host[o] = host
        return out


@pytest.fixture
def reads(monkeypatch):
    mode = DeviceReads()

    def to_device(t, device):  # what lands on the accelerator is device-side
        out = t.clone()
        mode.host[out] = False
        return out

    for mod in (masks_mod, mixing_mod, automix_mod):
        if hasattr(mod, "_to_device"):
            monkeypatch.setattr(mod, "_to_device", to_device)
    for name in ("tolist", "numpy"):
        orig = getattr(torch.Tensor, name)

        def wrapped(self, *a, _orig=orig, _name=name, **k):
            if not mode.is_host(self):
                mode.reads.append(_name)
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapped)
    return mode


def _batch(n=8, size=32, classes=10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)


def test_the_counter_sees_reads_of_the_batch(reads):
    x, y = _batch()
    with reads:
        int(y.max()), bool((x > 0).any()), y.tolist()
        float(torch.rand((), generator=torch.Generator()))  # a host draw: not a read
    assert len(reads.reads) == 3


@pytest.mark.parametrize("method", sorted(MIXERS))
def test_mixers_do_not_read_the_device(reads, method):
    x, y = _batch()
    with reads:
        out = mix(x, y, method, alpha=1.0, generator=torch.Generator().manual_seed(0), check_labels=False)
        mix_loss(torch.randn(8, 10), out, check_labels=False)
    assert reads.reads == []


def test_label_checks_are_reads_and_on_by_default(reads):
    x, y = _batch()
    with reads:
        out = mix(x, y, "mixup", generator=torch.Generator().manual_seed(0))
        mix_loss(torch.randn(8, 10), out)
    assert len(reads.reads) >= 3  # y.min() in mix, target ranges in mix_loss


@pytest.mark.parametrize("path", ["core", "fast"])
@pytest.mark.parametrize("kw", [{}, {"lam_concat": True, "mask_adjust": 0.5, "switch_off": 0.8,
                                     "no_repeat_perm": True}])
def test_training_step_does_not_read_the_device(reads, kw, path):
    """Neither the readable step (its branches read host draws) nor the fast one (fused pass) reads the device."""
    from automix_lite.fast.step import training_step as fast_training_step

    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", 10, **kw)
    step_fn = model.training_step if path == "core" else partial(fast_training_step, model, online_pass="fused")
    x, y = _batch(size=16)
    g = torch.Generator().manual_seed(0)
    with reads:
        for step in range(3):
            out = step_fn(x, y, step, 10, generator=g, check_labels=False)
    assert reads.reads == []
    with reads:
        step_fn(x, y, 0, 10, generator=g)
    assert len(reads.reads) == 2  # the public default checks the label range: y.min(), y.max()
    assert torch.isfinite(out["loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for torch.cuda.set_sync_debug_mode")
def test_no_sync_on_cuda():
    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", 10).cuda()
    x, y = (t.cuda() for t in _batch(size=16))
    g = torch.Generator().manual_seed(0)
    model.training_step(x, y, 0, 10, generator=g, check_labels=False)  # warm-up (allocations)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        model.training_step(x, y, 1, 10, generator=g, check_labels=False)
        for method in MIXERS:
            mix(x, y, method, generator=g, check_labels=False)
    finally:
        torch.cuda.set_sync_debug_mode(0)
