"""Checks of the exercises of notebooks/01_mixup_zoo.ipynb, graded against automix_lite on random trials."""
from __future__ import annotations

import torch

from automix_lite.core.masks import cutmix_box
from automix_lite.core.mixing import mix_images

from ._common import assert_close, assert_same_gradients, derangement


def check_mix_images(fn, trials: int = 5) -> None:
    """``fn(x, mask, perm)`` equals ``mix_images`` (values and gradients) on random batches and pairings."""
    for seed in range(trials):
        g = torch.Generator().manual_seed(seed)
        n = 3 + seed  # 3..7 samples
        x = torch.randn(n, 3, 5, 6, generator=g).requires_grad_()
        mask = torch.rand(n, 1, 5, 6, generator=g).requires_grad_()
        perm = derangement(n, g)
        want = mix_images(x, mask, perm)
        got = fn(x, mask, perm)
        mistakes = {"the inverse pairing x[perm.argsort()]": mix_images(x, mask, perm.argsort()),
                    "the weights swapped (the sample gets 1 - mask)": mix_images(x, 1 - mask, perm),
                    "the partner weighted by mask too": x * mask + x[perm] * mask}
        what = f"trial {seed} (perm = {perm.tolist()})"
        assert_close(got, want, what, "The partner of sample i is x[perm[i]]; the sample keeps mask, the partner "
                     "gets 1 - mask.", mistakes)
        assert_same_gradients(got, want, {"x": x, "mask": mask}, what)
    print(f"Exercise 1: correct on {trials} random batches (values and gradients)")


def check_cutmix_box(fn, trials: int = 40) -> None:
    """``fn(h, w, lam, cy, cx)`` equals the library's box on random sizes, λ and centres (borders included)."""
    g = torch.Generator().manual_seed(0)
    cases = [(32, 32, 0.75, 16, 16), (32, 32, 0.75, 0, 0), (32, 32, 0.3, 31, 5), (32, 32, 0.0, 16, 16),
             (32, 32, 1.0, 3, 3)]
    for _ in range(trials):
        h, w = (int(v) for v in torch.randint(5, 40, (2,), generator=g))
        lam = float(torch.rand((), generator=g))
        cy, cx = int(torch.randint(0, h, (), generator=g)), int(torch.randint(0, w, (), generator=g))
        cases.append((h, w, lam, cy, cx))
    for h, w, lam, cy, cx in cases:
        want = cutmix_box(h, w, lam, center=(cy, cx))
        got = fn(h, w, lam, cy, cx)
        got = tuple(int(v) for v in got) if isinstance(got, (tuple, list)) and len(got) == 4 else got
        assert got == want, (f"h={h}, w={w}, lam={lam:.4f}, centre=({cy}, {cx}): got {got}, expected {want} "
                             "(y0, y1, x0, x1). The sides are floor(H*sqrt(1 - lam)) and floor(W*sqrt(1 - lam)), "
                             "the ends centre -/+ side // 2, each clipped to [0, H] or [0, W].")
    print(f"Exercise 2: correct on {len(cases)} boxes, borders included")
