"""load_model / export_classifier (issue 22): a run comes back in one call; its classifier as a timm state dict."""
import pickle

import pytest
import timm
import torch
import torch.nn as nn

from automix_lite import AutoMix, Classifier, export_classifier, load_model, train
from automix_lite.trainer.checkpoint import CheckpointError, load_checkpoint, rng_state, set_rng_state

from conftest import fake_config


def _run(tmp_path, method, **kw):
    return train(fake_config(tmp_path, method, method=method, **kw), figures=False, progress="off")


@pytest.mark.parametrize("method", ["automix", "mixup"])
def test_load_model_round_trip_equal_logits(tmp_path, method):
    result = _run(tmp_path, method)  # the quick preset's Mix Block: layer2, att_norm='bn'
    x = torch.randn(4, 3, 16, 16)
    result.model.eval()
    for path in (result.out, result.out / "checkpoint.pt"):
        model = load_model(path)
        assert type(model) is type(result.model) and not model.training
        if method == "automix":
            assert model.feature_stage == result.model.feature_stage == 2
            for head in ("one_k", "mix_k", "one_q", "mix_q"):
                assert torch.equal(model(x, head=head), result.model(x, head=head))
            lam, perm = 0.4, torch.arange(4).flip(0)
            assert torch.equal(model.generate_mask(x, lam, perm), result.model.generate_mask(x, lam, perm))
        else:
            assert torch.equal(model(x), result.model(x))


def test_load_model_infers_in_chans_of_an_older_checkpoint(tmp_path):
    result = _run(tmp_path, "vanilla", in_chans=1)
    ckpt = load_checkpoint(result.out / "checkpoint.pt")
    del ckpt["in_chans"]
    ckpt["config"]["in_chans"] = None
    torch.save(ckpt, tmp_path / "old.pt")
    model = load_model(tmp_path / "old.pt")
    x = torch.randn(2, 1, 16, 16)
    assert torch.equal(model(x), result.model.eval()(x))


class _Payload:
    """Pickled code with a side effect: unpickling it writes ``path`` (a weights-only load must refuse it)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('code ran')",))


def test_checkpoints_load_with_weights_only_and_refuse_pickled_code(tmp_path):
    """Catches a load_model that unpickles with weights_only=False (even when the error that follows is wrapped in
    CheckpointError): the payload's file would then exist. tests/test_torch_floor.py runs this on torch 2.3 too,
    where torch.load's default is weights_only=False, so deleting the argument from the library fails there."""
    result = _run(tmp_path, "vanilla")
    torch.load(result.out / "checkpoint.pt", weights_only=True)  # raises if anything but tensors / plain values
    ran = tmp_path / "payload_ran"
    torch.save({"model": {}, "config": {}, "num_classes": 2, "payload": _Payload(ran)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "evil.pt")
    assert not ran.exists(), "unpickling ran the checkpoint's code"
    (tmp_path / "run").mkdir()
    torch.save({"model": {}, "payload": _Payload(ran)}, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "run")  # a run folder: the same refusal
    assert not ran.exists()


def test_every_checkpoint_read_asks_for_weights_only(tmp_path, monkeypatch):
    """The library passes weights_only=True itself instead of relying on torch's default (True from torch 2.6,
    False before): catches the argument deleted or set to False on any torch version."""
    result = _run(tmp_path, "automix")
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k.get("weights_only", "default")) or real(*a, **k))
    load_model(result.out)
    export_classifier(result.out)
    assert calls and all(w is True for w in calls), calls


def test_rng_state_round_trip_through_weights_only(tmp_path):
    import random

    import numpy as np

    gen = torch.Generator().manual_seed(3)
    state = rng_state(gen)
    torch.save(state, tmp_path / "rng.pt")
    want = (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), gen)
    assert (random.random(), np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=gen).item()) == want
    legacy = dict(state, numpy=np.random.get_state())  # the format before tensors: still restorable
    set_rng_state(pickle.loads(pickle.dumps(legacy)), gen)


def _timm_cifar_resnet(name: str, num_classes: int, in_chans: int = 3) -> nn.Module:
    """What a user without automix_lite writes for a *_cifar backbone: timm's ResNet with a 3x3/1 stem."""
    net = timm.create_model(name, num_classes=num_classes, in_chans=in_chans)
    net.conv1 = nn.Conv2d(in_chans, net.bn1.num_features, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


@pytest.mark.parametrize("head", ["one_k", "one_q", "mix_k"])
def test_export_automix_head_loads_into_timm(head):
    torch.manual_seed(0)
    model = AutoMix("resnet18_cifar", num_classes=5)
    for p in model.parameters():  # make the two encoders and the four heads differ
        p.data.add_(torch.randn_like(p) * 0.01)
    model.eval()
    net = _timm_cifar_resnet("resnet18", 5)
    net.load_state_dict(export_classifier(model, head), strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(net.eval()(x), model(x, head=head), rtol=0, atol=0)


def test_export_timm_named_classifier_loads_into_timm_create_model():
    torch.manual_seed(0)
    model = Classifier("resnet18", num_classes=3).eval()
    net = timm.create_model("resnet18", num_classes=3).eval()
    net.load_state_dict(export_classifier(model), strict=True)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(net(x), model(x))


def test_export_from_a_run_folder_and_bad_heads(tmp_path):
    result = _run(tmp_path, "automix")
    state = export_classifier(result.out)
    assert torch.equal(state["fc.weight"], result.model.head_one_k.fc.weight)
    with pytest.raises(ValueError, match="ensemble"):
        export_classifier(result.model, "ensemble")
    with pytest.raises(TypeError):
        export_classifier(nn.Linear(2, 2))


def test_rng_states_of_more_gpus_than_present_restore_the_ones_that_exist(monkeypatch):
    """An 8-GPU checkpoint resumed on one GPU raised IndexError (set_rng_state_all over every saved state)."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, device="cuda": restored.append(device))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: (_ for _ in ()).throw(IndexError("8 > 1")))
    gen = torch.Generator().manual_seed(0)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.zeros(16, dtype=torch.uint8)] * 8)
    state = rng_state(gen)
    assert len(state["cuda"]) == 8
    set_rng_state(state, gen)
    assert restored == [0]
