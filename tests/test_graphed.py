"""The graphed step's CPU twin (the code a CUDA graph records, run eagerly) equals today's eager step."""
import copy

import pytest
import torch
import torch.nn.functional as F

from automix_lite.core.automix import AutoMix
from automix_lite.core.mixing import mix, mix_loss
from automix_lite.core.models import Classifier
from automix_lite.fast.graphed import GraphedStep, graphed_step


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    if not a.is_floating_point():
        return 0.0 if torch.equal(a, b) else float("inf")
    return float((a - b).double().norm()) / max(float(b.double().norm()), 1e-30)


def _batches(steps, n=6, size=16, classes=5):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g))
            for _ in range(steps)]


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def _run_pair(steps, seed, **kw):
    """An AutoMix trained eagerly (training_step, SGD, momentum_update) and a copy trained by the graphed
    step's CPU twin, on the same batches and generator seeds; yields (eager out, twin out, EMA m) per step."""
    torch.manual_seed(0)
    eager = AutoMix("resnet_tiny_cifar", 5, **kw)
    twin_model = copy.deepcopy(eager)
    opt_e = _sgd(eager.online_parameters() + eager.mix_block_parameters())
    twin = GraphedStep(twin_model, _sgd(twin_model.online_parameters() + twin_model.mix_block_parameters()),
                       total_steps=10)
    assert not twin.use_graph
    g_e, g_t = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    outs = []
    for step, (x, y) in enumerate(_batches(steps)):
        out_e = eager.training_step(x, y, step, 10, generator=g_e)
        opt_e.zero_grad(set_to_none=True)
        out_e["loss"].backward()
        opt_e.step()
        m = eager.momentum_update(step, 10)
        out_t = {k: v.clone() if torch.is_tensor(v) else v for k, v in twin(x, y, step, g_t).items()}
        outs.append((out_e, out_t, m))  # (the twin's outputs live in static buffers: cloned to keep)
    return eager.state_dict(), twin_model.state_dict(), outs


@pytest.mark.parametrize("kw", [{"lam_margin": 0.3},
                                {"switch_off": 0.5, "mask_adjust": 0.5, "lam_concat": True, "ema_bn_buffers": True}])
def test_automix_twin_equals_eager_training_step(kw):
    """Losses, parameters and buffers after 4 steps (SGD with momentum + EMA): every tensor within 1e-6 of
    the eager path (relative, per tensor norm). The one rounding difference: the EMA's momentum is a device
    scalar (m·k, then + (1-m)·q) where the eager update uses a Python float (k·m + (1-m)·q fused)."""
    b, a, outs = _run_pair(4, 3, **kw)
    for step, (out_e, out_t, m) in enumerate(outs):
        assert out_t["lam_mb"] == out_e["lam_mb"].item() and out_t["ema_momentum"] == m
        for key in ("loss", "loss_one_q", "loss_mix_q", "loss_mix_k", "loss_mask"):
            assert _rel(out_t[key], out_e[key].detach()) <= 1e-6, (step, key)
        assert torch.equal(out_t["perm_mb"], out_e["perm_mb"])
    worst = max((_rel(a[k], b[k]), k) for k in a)
    assert worst[0] <= 1e-6, worst


def test_automix_twin_is_bitwise_without_ema():
    """With momentum 1 (no EMA) nothing differs in rounding: the twin is bitwise the eager step."""
    b, a, outs = _run_pair(3, 1, momentum=1.0, end_momentum=1.0)
    assert all(torch.equal(out_t["loss"], out_e["loss"].detach()) for out_e, out_t, _ in outs)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["vanilla", "mixup", "cutmix"])
def test_classifier_twin_equals_eager(method):
    torch.manual_seed(0)
    eager = Classifier("resnet_tiny_cifar", 5)
    twin_model = copy.deepcopy(eager)
    opt_e, opt_t = _sgd(list(eager.parameters())), _sgd(list(twin_model.parameters()))
    twin = GraphedStep(twin_model, opt_t, total_steps=10, method=method, smoothing=0.1)
    g_e, g_t = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for step, (x, y) in enumerate(_batches(3)):
        if method == "vanilla":
            loss = F.cross_entropy(eager(x).float(), y, label_smoothing=0.1)
        else:
            out = mix(x, y, method, generator=g_e)
            loss = mix_loss(eager(out.images), out, 0.1)
        opt_e.zero_grad(set_to_none=True)
        loss.backward()
        opt_e.step()
        assert torch.equal(twin(x, y, step, g_t)["loss"], loss.detach())
    a, b = twin_model.state_dict(), eager.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_graphed_step_refusals_and_benchmark_helper():
    model = AutoMix("resnet_tiny_cifar", 5)
    opt = _sgd(model.online_parameters())
    with pytest.raises(NotImplementedError, match="GradScaler"):
        GraphedStep(model, opt, total_steps=10, amp_dtype=torch.float16)
    with pytest.raises(TypeError, match="AutoMix"):
        GraphedStep(model, opt, total_steps=10, method="mixup")
    with pytest.raises(NotImplementedError, match="manifoldmix"):
        GraphedStep(Classifier("resnet_tiny_cifar", 5), opt, total_steps=10, method="manifoldmix")
    with pytest.raises(ValueError, match="CUDA"):
        GraphedStep(model, opt, total_steps=10, use_graph=True)
    x, y = _batches(1)[0]
    step = graphed_step(model, opt, x, y, method="automix", total_steps=10)
    out = step(0)
    assert torch.isfinite(out["loss"])
    twin = GraphedStep(model, opt, total_steps=10)
    twin(x, y, 0)
    with pytest.raises(ValueError, match="static shapes"):
        twin(x[:4], y[:4], 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the captured graph itself)")
def test_captured_graph_equals_its_eager_twin_on_cuda():
    """The CUDA graph (with a re-capture after an lr change and two graphs for switch_off) against the same
    code run eagerly on a copy: losses and state within 1e-4 (GPU kernels may reorder sums)."""
    torch.backends.cudnn.deterministic = True
    torch.manual_seed(0)
    graph_model = AutoMix("resnet_tiny_cifar", 5, switch_off=0.5).cuda()
    eager_model = copy.deepcopy(graph_model)
    runs = []
    for model, use_graph in ((graph_model, True), (eager_model, False)):
        opt = _sgd(model.online_parameters() + model.mix_block_parameters())
        runs.append((GraphedStep(model, opt, total_steps=10, warmup=2, use_graph=use_graph), opt))
    g = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)]
    for step, (x, y) in enumerate(_batches(8)):
        losses = []
        for (runner, opt), gen in zip(runs, g):
            if step == 5:
                for group in opt.param_groups:
                    group["lr"] = 0.05
            losses.append(runner(x.cuda(), y.cuda(), step, gen)["loss"].clone())
        assert _rel(losses[0], losses[1]) <= 1e-4, step
    assert len(runs[0][0]._graphs) >= 1
    a, b = graph_model.state_dict(), eager_model.state_dict()
    assert max(_rel(a[k], b[k]) for k in a) <= 1e-4


@pytest.mark.parametrize("seed", range(6))
def test_every_graph_key_runs_eagerly_before_it_is_captured(seed):
    """Issue 29, item 7: with ``switch_off`` the Mix Block's on and off branches are two graphs; the warm-up used to
    count calls, so a branch first drawn after it was captured without ever running eagerly (its kernels and
    cuDNN plans first used inside the capture). Run on the CPU with the capture replaced by a recorder."""
    torch.manual_seed(0)
    model = AutoMix("resnet_tiny_cifar", 5, switch_off=0.5)
    step = GraphedStep(model, _sgd(model.online_parameters() + model.mix_block_parameters()), total_steps=12,
                       warmup=1)
    step.use_graph = True  # the CUDA decisions, with the device work below done eagerly and recorded
    log = []
    step._eager = lambda key: log.append(("eager", key)) or step._body(*key)
    step._replay = lambda key: log.append(("replay", key)) or step._body(*key)
    g = torch.Generator().manual_seed(seed)
    for i, (x, y) in enumerate(_batches(12)):
        step(x, y, i, g)
    firsts = {}
    for path, key in log:
        firsts.setdefault(key, path)
    assert len(firsts) == 2 and all(path == "eager" for path in firsts.values()), log
    assert sum(path == "replay" for path, _ in log) >= 8  # the rest replays
