"""What every exercise check shares: randomised inputs, and comparisons of values and gradients with the library
that fail with a message saying what differs and, where a known mistake explains it, which one."""
from __future__ import annotations

import torch


def derangement(n: int, gen: torch.Generator) -> torch.Tensor:
    """A random pairing [n] with no fixed point that is not its own inverse (a plain swap pattern such as
    [1, 0, 3, 2] would let the inverse pairing ``perm.argsort()`` pass a check). Needs n >= 3."""
    while True:
        perm = torch.randperm(n, generator=gen)
        if (perm != torch.arange(n)).all() and not torch.equal(perm.argsort(), perm):
            return perm


def _as_float(t) -> torch.Tensor:
    return t.detach().float() if torch.is_tensor(t) else torch.tensor(float(t))


def which_mistake(got: torch.Tensor, mistakes: dict, atol: float) -> str:
    """The name of the first known mistake whose result equals ``got`` ('' if none)."""
    for name, value in (mistakes or {}).items():
        value = _as_float(value)
        if value.shape == got.shape and torch.allclose(got, value, atol=atol, rtol=1e-5):
            return f" It equals the result of a known mistake: {name}."
    return ""


def assert_close(got, want: torch.Tensor, what: str, hint: str = "", mistakes: dict | None = None,
                 atol: float = 1e-6) -> None:
    """``got`` equals the library's ``want`` (shape and values), or an AssertionError naming what differs."""
    if not torch.is_tensor(got):
        raise AssertionError(f"{what}: return a torch tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    g, w = _as_float(got), _as_float(want)
    if not torch.allclose(g, w, atol=atol, rtol=1e-5):
        err = float((g - w).abs().max())
        shown = f"got {float(g):.5f}, expected {float(w):.5f}" if g.numel() == 1 else f"off by up to {err:.3g}"
        raise AssertionError(f"{what}: {shown}.{which_mistake(g, mistakes, atol)} {hint}".rstrip())


def gradients(out: torch.Tensor, inputs: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    """d<out, r>/d input for a fixed random r (the whole Jacobian seen through one random direction); an input
    that ``out`` does not reach gets zeros."""
    r = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    if not out.requires_grad:
        return [torch.zeros_like(t) for t in inputs]
    grads = torch.autograd.grad((out.float() * r).sum(), inputs, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]


def assert_same_gradients(got: torch.Tensor, want: torch.Tensor, inputs: dict, what: str, hint: str = "",
                          atol: float = 1e-5, explain=None) -> None:
    """The gradients of ``got`` and ``want`` with respect to each named input are equal; ``explain(name)`` may
    add a hint about the input whose gradient differs."""
    names = list(inputs)
    g_got, g_want = gradients(got, list(inputs.values())), gradients(want, list(inputs.values()))
    for name, a, b in zip(names, g_got, g_want):
        if not torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4):
            if float(b.abs().max()) == 0:
                why = "it must not reach it"
            elif float(a.abs().max()) == 0:
                why = "yours does not reach it (a .detach(), torch.no_grad() or .item() on the way?)"
            else:
                why = f"off by up to {float((a - b).abs().max()):.3g}"
            extra = explain(name) if explain else ""
            raise AssertionError(f"{what}: the gradient with respect to {name} differs from the library's: {why}. "
                                 f"{extra}{hint}".rstrip())
