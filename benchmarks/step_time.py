"""AutoMix vs. vanilla vs. MixUp training-step time (issue 3, item 6).

AutoMix: Liu, Li et al., ECCV 2022, arXiv:2103.13027. One AutoMix step runs the momentum encoder up to the
feature stage, the Mix Block twice, the frozen momentum network on the Mix-Block mix, and the online
network on the clean and the mixed batch: about three forward/backward passes. The reference
implementation (OpenMixup) measures 3.15x vanilla on this machine class; the compute floor is about 2.9x.

Same protocol as ``speed.py`` (whose functions it reuses): ``resnet18_cifar``, batch 32, 32x32,
``torch.set_num_threads(2)``, methods interleaved round-robin, warm-up rounds excluded, median of
>= 20 steps. Prints the ratios to vanilla and writes ``step_time_<device>.json`` / ``.md``.

Example::

    python benchmarks/step_time.py --steps 30 --out benchmarks/results
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: import the sibling harness

import speed  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--models" not in argv and "--quick" not in argv:
        argv = ["--models", "resnet18_cifar"] + argv
    result = speed.main(argv, stem="step_time", default_methods_fn=lambda: ["vanilla", "mixup", "automix"])
    for model_name, stats in result["results"].items():
        line = ", ".join(f"{m} {s['ratio']:.2f}x" for m, s in stats.items())
        a = stats.get("automix", {}).get("ratio")
        ok = "" if a is None else (f" -> AutoMix target <= {speed.AUTOMIX_TARGET}x "
                                   + ("met" if a <= speed.AUTOMIX_TARGET else "MISSED"))
        print(f"[step_time] {model_name}: {line}{ok}")
    return result


if __name__ == "__main__":
    main()
