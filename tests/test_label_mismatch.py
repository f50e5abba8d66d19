"""The label-mismatch measurement (automix_lite.trainer.mismatch, benchmarks/label_mismatch.py, docs/label_mismatch.md).

Constructed cases where the answer is known: a *proportional* judge reads each class in proportion to the pixels
that carry it (images of class k light channel k), so the share it reads is the mask's own area exactly.
"""
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from automix_lite import mix
from automix_lite.core.mixing import mix_images
from automix_lite.trainer.mismatch import area_follow, binned_curve, label_shares, saliency_maps

ROOT = Path(__file__).resolve().parents[1]
K = 4


class Proportional(nn.Module):
    """logits_k = log(mean of channel k): p(k | x) is the share of the image's mass in channel k."""

    def forward(self, x):
        return torch.log(x.mean((2, 3)) + 1e-12)


def _batch(n=8, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    x = torch.zeros(n, K, size, size)
    x[torch.arange(n), y] = 1.0  # class k: channel k all ones
    perm = torch.arange(n).roll(1)  # partner of a different class (n a multiple of K)
    return x, y, perm, g


def _shares(mask, lam, **kw):
    x, y, perm, _ = _batch()
    return label_shares(Proportional().eval(), x, y, perm, mix_images(x, mask, perm), lam, mask, **kw)


def test_a_mask_that_copies_only_image_i_gives_share_one():
    n = 8
    r = _shares(torch.ones(n, 1, 8, 8), torch.full((n,), 0.3))
    assert torch.allclose(r.share, torch.ones(n, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(r.mismatch, torch.full((n,), 0.7, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(r.area_mismatch, torch.zeros(n, dtype=torch.float64), atol=1e-9)


def test_the_proportional_judge_reads_the_area_of_any_mask():
    """Share = area; a mask whose area ignores λ mislabels by |area − λ| while carrying its pixels' classes."""
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(8, 1, 8, 8, generator=g) < 0.5).float()
    lam = torch.rand(8, generator=g)
    r = _shares(mask, lam)
    assert torch.allclose(r.share, r.area, atol=1e-9)
    assert torch.allclose(r.mismatch, (r.area - lam.double()).abs(), atol=1e-9)
    assert r.summary()["area_mismatch"] < 1e-6


@pytest.mark.parametrize("method", ["mixup", "cutmix", "fmix", "gridmix", "smoothmix"])
def test_hand_crafted_mixes_read_by_the_proportional_judge_carry_their_label(method):
    x, y, _, g = _batch(n=8, size=16)
    out = mix(x, y, method, lam=0.3, generator=g)
    r = label_shares(Proportional().eval(), x, y, out.perm, out.images, out.lam, out.mask)
    assert r.summary()["mismatch"] < 1e-6  # lam is the realised area and the judge reads the area


def test_swapping_the_roles_of_the_pair_gives_one_minus_the_share():
    """The same mixed images seen from the partner's side: s' = 1 − s, λ' = 1 − λ, the same mismatch."""
    torch.manual_seed(0)
    judge = nn.Sequential(nn.Conv2d(K, 6, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(K)).eval()
    x, y, _, g = _batch()
    perm = torch.arange(8).flip(0)  # an involution: perm[perm] = id
    mask = torch.rand(8, 1, 8, 8, generator=g)
    lam = torch.rand(8, generator=g)
    mixed = mix_images(x, mask, perm)
    judge(x)  # materialise the lazy layer
    a = label_shares(judge, x, y, perm, mixed, lam, mask, saliency=True)
    b = label_shares(judge, x[perm], y[perm], perm, mixed, 1 - lam, 1 - mask, saliency=True)
    assert torch.allclose(a.share + b.share, torch.ones(8, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(a.mismatch, b.mismatch, atol=1e-6)
    assert torch.allclose(a.saliency_share + b.saliency_share, torch.ones(8, dtype=torch.float64), atol=1e-9)


def test_saliency_share_is_one_for_all_own_and_zero_for_all_partner():
    judge = nn.Sequential(nn.Conv2d(K, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 36, K)).eval()
    x, y, perm, _ = _batch()
    for fill, want in ((1.0, 1.0), (0.0, 0.0)):
        mask = torch.full((8, 1, 8, 8), fill)
        r = label_shares(judge, x, y, perm, mix_images(x, mask, perm), torch.full((8,), 0.5), mask, saliency=True)
        assert torch.allclose(r.saliency_share, torch.full((8,), want, dtype=torch.float64), atol=1e-9)
    sal = saliency_maps(judge, x, y)
    assert sal.shape == (8, 8, 8) and torch.allclose(sal.flatten(1).sum(1), torch.ones(8, dtype=torch.float64))


def test_saliency_refuses_mixes_that_are_not_pixel_aligned():
    x, y, _, g = _batch(n=8, size=16)
    x = x * torch.rand(8, 1, 16, 16, generator=g)  # textured: a shrunk partner differs from a masked one
    out = mix(x, y, "resizemix", lam=0.5, generator=g)  # the partner is shrunk, not masked
    with pytest.raises(ValueError, match="pixel-aligned"):
        label_shares(Proportional().eval(), x, y, out.perm, out.images, out.lam, out.mask, saliency=True)


def test_pairs_of_one_class_are_not_counted():
    x, y, _, _ = _batch()
    perm = torch.arange(8)  # everyone with itself
    mask = torch.full((8, 1, 8, 8), 0.5)
    r = label_shares(Proportional().eval(), x, y, perm, mix_images(x, mask, perm), torch.full((8,), 0.5), mask)
    assert not r.valid.any()
    with pytest.raises(ValueError, match="no valid pair"):
        r.summary()


def _bad_inputs():
    x, y, perm, _ = _batch()
    mask, lam = torch.full((8, 1, 8, 8), 0.5), torch.full((8,), 0.5)
    mixed = mix_images(x, mask, perm)
    ok = dict(x=x, y=y, perm=perm, mixed=mixed, lam=lam, mask=mask)
    return ok, [
        (dict(x=x[0]), "x must be images"), (dict(mixed=mixed[:4]), "mixed must have the shape"),
        (dict(y=y[:3]), "y must have shape"), (dict(perm=perm + 8), "perm must index"),
        (dict(lam=lam + 1), "lam must lie"), (dict(mask=mask[:, :, :4]), "mask must be the own-pixel"),
        (dict(mask=mask * 3), "mask values"), (dict(y=y + K), "exceed the judge"),
    ]


def test_bad_inputs_are_refused_with_a_clear_message():
    ok, cases = _bad_inputs()
    for change, msg in cases:
        kw = {**ok, **change}
        with pytest.raises(ValueError, match=msg):
            label_shares(Proportional().eval(), **kw)
    with pytest.raises(TypeError, match="integer"):
        label_shares(Proportional().eval(), **{**ok, "y": ok["y"].float()})
    with pytest.raises(ValueError, match="training mode"):
        label_shares(Proportional().train(), **ok)


def test_binned_curve_and_area_follow_on_known_values():
    lam = torch.tensor([0.05, 0.15, 0.55, 0.95, 0.99])
    c = binned_curve(lam, lam * 0 + 0.5, bins=2)
    assert c["count"] == [2, 3] and c["mean"] == [0.5, 0.5] and c["centre"] == [0.25, 0.75]
    c = binned_curve(lam, lam, bins=10, valid=torch.tensor([True, True, True, True, False]))
    assert c["count"] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 1]  # bin k holds λ in [k/10, (k+1)/10)
    assert sum(c["count"]) == 4 and c["mean"][9] == pytest.approx(0.95) and c["mean"][3] != c["mean"][3]  # nan
    f = area_follow(lam, lam)
    assert f["slope"] == pytest.approx(1) and f["corr"] == pytest.approx(1) and f["mean_abs_area_minus_lam"] == 0
    f = area_follow(lam, torch.full_like(lam, 0.5))
    assert f["slope"] == 0 and f["corr"] == 0
    assert area_follow(lam, 0.2 * lam + 0.4)["slope"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="does not vary"):
        area_follow(torch.full((3,), 0.5), lam[:3])
    with pytest.raises(ValueError, match="bins"):
        binned_curve(lam, lam, bins=0)


def _bench():
    spec = importlib.util.spec_from_file_location("label_mismatch", ROOT / "benchmarks" / "label_mismatch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_dry_run_covers_every_pixel_mixer_and_reuses_its_trainings(tmp_path, monkeypatch):
    lm = _bench()
    args = ["--quick", "--out", str(tmp_path / "res"), "--runs-dir", str(tmp_path / "runs")]
    result = lm.main(args)
    digits = result["datasets"]["digits"]
    mixers = set(lm.pixel_mixers())
    assert mixers == {"mixup", "cutmix", "fmix", "resizemix", "saliencymix", "smoothmix", "gridmix"}
    assert set(digits["summary"]["vanilla"]) == mixers | {"automix", "automix_lamcat"}
    assert set(digits["summary"]) == {"vanilla", "automix.mix_k", "automix_lamcat.mix_k"}
    assert "saliency_mismatch" in digits["summary"]["vanilla"]["cutmix"]
    assert "saliency_mismatch" not in digits["summary"]["vanilla"]["resizemix"]  # not pixel-aligned
    for f in ("json", "md", "png"):
        assert (tmp_path / "res" / f"label_mismatch.{f}").stat().st_size > 0
    on_disk = json.loads((tmp_path / "res" / "label_mismatch.json").read_text())
    assert on_disk["provenance"]["command"].endswith(" ".join(args)) and on_disk["settings"]["seeds"] == [0, 1]

    def no_training(*a, **k):
        raise AssertionError("a finished run with the same config must be loaded, not trained again")
    monkeypatch.setattr(lm, "train", no_training)
    again = lm.main(args)  # same draws, same cached models: the same numbers
    assert json.dumps(again["datasets"]["digits"]["summary"]) == json.dumps(digits["summary"])  # (empty bins: nan)


def test_the_mixers_use_the_pairs_and_lambda_asked_for():
    """Every mixer of the study sees the same pairs and the same λ per batch (what makes the rows comparable)."""
    lm = _bench()
    x, y = torch.randn(40, 3, 16, 16), torch.arange(40) % 10
    want = lm.draws(40, 10, seed=3)
    flat = [(w[0].tolist(), w[1], w[2]) for w in want]
    assert flat == [(w[0].tolist(), w[1], w[2]) for w in lm.draws(40, 10, seed=3)]
    assert [w[1] for w in want] != [w[1] for w in lm.draws(40, 10, seed=4)]
    for m in lm.pixel_mixers():
        idx, perm, mixed, lam, own = lm.mixed_draw(m, {}, x, y, 3, 10)
        assert torch.equal(idx, torch.cat([w[0] for w in want]))
        assert torch.equal(perm[:10], torch.arange(10).flip(0)) and torch.equal(perm[10:20], 10 + perm[:10])
        if m in ("mixup", "fmix", "resizemix"):  # their area is λ (ResizeMix: up to its rounded patch side)
            lam_b = torch.tensor([w[1] for w in want]).repeat_interleave(10).float()
            assert torch.allclose(lam, lam_b, atol=0.13 if m == "resizemix" else 1e-2)


def test_the_numbers_docs_label_mismatch_quotes_are_the_results_file():
    lm = _bench()
    result = json.loads((ROOT / "benchmarks" / "results" / "label_mismatch.json").read_text())
    doc = (ROOT / "docs" / "label_mismatch.md").read_text()
    block = re.search(r"<!-- results:begin -->\n(.*?)<!-- results:end -->", doc, re.S)
    assert block, "docs/label_mismatch.md must hold the generated results block"
    assert block.group(1) == lm.doc_block(result), "stale: paste benchmarks/label_mismatch.py's doc_block again"
    for phrase, value in _quoted(result).items():
        assert phrase.format(value) in doc, f"docs/label_mismatch.md should say: {phrase.format(value)}"


def _quoted(result: dict) -> dict:
    """Phrase of docs/label_mismatch.md -> the value of the results file it quotes."""
    d = result["datasets"]["digits"]
    s = d["summary"]["vanilla"]
    return {"(area ~ λ slope {:.2f})": s["automix"]["area_follow"]["slope"],
            "({:.3f} against at most about 0.05)": s["automix"]["saliency_mismatch"]["mean"],
            "(gap {:+.3f})": d["judge_gap"]["automix.mix_k"]["automix"],
            "(slope {:.2f})": s["automix_lamcat"]["area_follow"]["slope"],
            "drops from {:.3f}": s["automix"]["mismatch"]["mean"],
            "to {:.3f}, among": s["automix_lamcat"]["mismatch"]["mean"],
            "not below MixUp's {:.3f}": s["mixup"]["mismatch"]["mean"],
            "(about {:.2f} here)": min(r["mismatch"]["mean"] for r in s.values())}


def test_the_claims_of_docs_label_mismatch_hold_in_the_results_file():
    """The doc's words about the digits results (rankings, bounds) checked against the numbers."""
    d = json.loads((ROOT / "benchmarks" / "results" / "label_mismatch.json").read_text())["datasets"]["digits"]
    s, own = d["summary"]["vanilla"], d["summary"]["automix.mix_k"]
    mm = {m: r["mismatch"]["mean"] for m, r in s.items()}
    hand = [m for m in s if not m.startswith("automix")]
    assert max(mm, key=mm.get) == "automix"  # the largest label mismatch of all mixers
    assert max(own, key=lambda m: own[m]["mismatch"]["mean"]) == "automix"  # even by its own encoder
    gaps = {m: own[m]["mismatch"]["mean"] - mm[m] for m in s}
    assert all(gaps["automix"] < gaps[m] for m in hand)  # more lenient with AutoMix than with the others
    assert max(s[m]["saliency_mismatch"]["mean"] for m in hand if "saliency_mismatch" in s[m]) <= 0.05
    assert all(0.25 <= v <= 0.4 for v in s["automix"]["share_curve"]["mean"])  # "near 0.3 at every λ"
    assert mm["mixup"] < mm["automix_lamcat"] < max(mm[m] for m in hand)  # among them, not below MixUp
    alt = d["summary"]["vanilla_s2"]
    assert max(abs(alt[m]["mismatch"]["mean"] - mm[m]) for m in s) <= 0.01  # the second judge agrees


def test_the_fashion_claims_of_docs_label_mismatch_hold_when_measured():
    result = json.loads((ROOT / "benchmarks" / "results" / "label_mismatch.json").read_text())
    if "fashion" not in result["datasets"]:
        pytest.skip("no Fashion-MNIST results in the file")
    d = result["datasets"]["fashion"]["summary"]
    for judge in ("vanilla", "automix.mix_k"):  # the λ-blind mixes mismatch most, by both judges
        assert max(d[judge], key=lambda m: d[judge][m]["mismatch"]["mean"]) == "automix"
    assert abs(d["vanilla"]["automix"]["area_follow"]["slope"]) < 0.05  # its area ignores λ


def test_the_numbers_notebook_04b_quotes_are_the_results_file():
    nb = json.loads((ROOT / "notebooks" / "04b_label_mismatch.ipynb").read_text())
    text = " ".join(" ".join(c["source"]) if isinstance(c["source"], list) else c["source"]
                    for c in nb["cells"] if c["cell_type"] == "markdown")
    text = re.sub(r"\s+", " ", text)
    s = json.loads((ROOT / "benchmarks" / "results" / "label_mismatch.json").read_text())["datasets"]["digits"]
    floor = min(r["mismatch"]["mean"] for r in s["summary"]["vanilla"].values())
    assert f"(about {floor:.2f} here)" in text
    spread = max(abs(s["summary"]["vanilla_s2"][m]["mismatch"]["mean"] - r["mismatch"]["mean"])
                 for m, r in s["summary"]["vanilla"].items())
    assert "to about ±0.01" in text and spread <= 0.01
