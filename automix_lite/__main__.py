"""Command line: ``python -m automix_lite train|eval|presets`` (also installed as ``automix-lite``).

A thin argparse layer over ``TrainConfig``: every dataclass field is a ``--flag`` (underscores or dashes),
applied as an override on top of ``--preset``. Examples::

    python -m automix_lite train --preset quick --out runs/quick
    python -m automix_lite train --preset cifar100 --data-dir data/cifar100 --download --epochs 800
    torchrun --nproc_per_node=8 -m automix_lite train --preset imagenet --data-dir /data/imagenet
    python -m automix_lite train --resume runs/quick
    python -m automix_lite eval --checkpoint runs/quick/checkpoint.pt
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from ._names import BOOL_WORDS
from .fast.runtime import DeviceUnavailableError
from .trainer.checkpoint import CheckpointError
from .trainer.config import PRESETS, TrainConfig
from .trainer.loop import NonFiniteLossError


def _parse_bool(text: str) -> bool:
    value = BOOL_WORDS.get(text.lower())
    if value is not None:
        return value
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _field_type(tp):
    """(argparse type, is_bool) for a dataclass annotation like ``int | None``."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    base = args[0]
    if base is bool:
        return _parse_bool, True
    if base in (int, float):
        return (lambda s, b=base: None if s.lower() == "none" else b(s)), False
    return (lambda s: None if s.lower() == "none" else s), False


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(TrainConfig)
    group = p.add_argument_group("config overrides (TrainConfig fields; default: the preset's value)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "preset_name":
            continue
        conv, is_bool = _field_type(hints[f.name])
        flags = [f"--{f.name.replace('_', '-')}"] + ([f"--{f.name}"] if "_" in f.name else [])
        if is_bool:  # --amp-like switches: `--download` or `--download false`
            group.add_argument(*flags, dest=f.name, type=conv, nargs="?", const=True, default=argparse.SUPPRESS,
                               metavar="BOOL")
        else:  # absent flags leave no attribute, so an explicit `none` overrides a preset's value with None
            group.add_argument(*flags, dest=f.name, type=conv, default=argparse.SUPPRESS, metavar=f.name.upper())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="automix_lite", description="AutoMix (ECCV 2022) and the mixup family, without the framework.",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("Examples::")[1])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train a model (see `train --help`)",
                        description="Train with a preset plus overrides; writes metrics.json, checkpoint.pt, "
                                    "masks.png (methods with a pixel mask) and curves.png to --out.")
    tr.add_argument("--preset", default=None, choices=sorted(PRESETS),
                    help="named recipe (default: quick, or the preset stored in --resume's checkpoint)")
    _add_config_flags(tr)
    ev = sub.add_parser("eval", help="evaluate a checkpoint on its validation set")
    ev.add_argument("--checkpoint", required=True, help="checkpoint.pt (or a run folder)")
    ev.add_argument("--data-dir", default=None, help="override the dataset folder stored in the checkpoint")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    sub.add_parser("presets", help="list the presets and their main settings")
    return parser


def _config_from_args(args) -> TrainConfig:
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if f.name != "preset_name" and hasattr(args, f.name)}
    preset = args.preset
    if preset is None and overrides.get("resume"):
        from .trainer.checkpoint import find_resume_checkpoint, load_checkpoint

        stored = load_checkpoint(find_resume_checkpoint(overrides["resume"]))["config"]
        return TrainConfig.from_dict({**stored, **overrides})
    preset = preset or "quick"
    if preset == "quick" and "out" not in overrides:
        overrides["out"] = "runs/quick"
    return TrainConfig.preset(preset, **overrides)


def _cmd_train(args) -> int:
    from .train import train

    cfg = _config_from_args(args)
    result = train(cfg)
    m = result.metrics
    if m.get("best_head") is not None:
        final = ", ".join(f"{k} {v:.2f}" for k, v in m["final_top1"].items())
        print(f"[automix_lite] done in {m['wall_time_s']:.0f}s: final top-1 {final}; best head "
              f"{m['best_head']} (median of last {m['k']} epochs: {m['best_median_top1']:.2f}%)")
    if m.get("diagnostics"):
        from .trainer.diagnostics import format_diagnostics

        print(f"[automix_lite] diagnostics: {format_diagnostics(m['diagnostics'])}")
    print(f"[automix_lite] wrote {result.out}/metrics.json, checkpoint.pt, curves.png"
          + (", masks.png" if cfg.method not in ("vanilla", "manifoldmix") else ""))
    return 0


def _cmd_eval(args) -> int:
    from torch.utils.data import DataLoader

    from .fast.runtime import resolve_device
    from .train import evaluate
    from .trainer.checkpoint import find_resume_checkpoint, load_checkpoint
    from .trainer.data import build_datasets
    from .trainer.saved import model_from_checkpoint

    ckpt = load_checkpoint(find_resume_checkpoint(args.checkpoint))
    over = {"data_dir": args.data_dir} if args.data_dir else {}
    cfg = TrainConfig.from_dict({**ckpt["config"], **over, "resume": None})
    _, val_ds, _ = build_datasets(cfg)
    device = resolve_device(args.device)  # the data and the model go where --device says, not the run's device
    val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.workers)
    model = model_from_checkpoint(ckpt, device=device)  # the checkpoint is read once
    top1 = evaluate(model, val_loader, device)
    print(json.dumps({"checkpoint": str(args.checkpoint), "epoch": ckpt["epoch"], "device": str(device),
                      "top1": top1}, indent=2))
    return 0


def _cmd_presets(_args) -> int:
    for name, p in PRESETS.items():
        print(f"{name:20s} dataset={p.get('dataset')} model={p.get('model')} epochs={p.get('epochs')} "
              f"batch={p.get('batch_size')} lr={p.get('lr')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return {"train": _cmd_train, "eval": _cmd_eval, "presets": _cmd_presets}[args.command](args)
    except (ValueError, FileNotFoundError, PermissionError) as e:
        print(f"automix_lite: error: {e}", file=sys.stderr)
        return 2
    except (NonFiniteLossError, CheckpointError, DeviceUnavailableError) as e:  # clear messages, no traceback
        print(f"automix_lite: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
