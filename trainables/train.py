"""One training run without Ray: ``python -m trainables.train [--config FILE] [--KEY VALUE ...]``.

Every TrialConfig field is a flag (``--recursion-steps 4``, ``--local-stream false``); a YAML
file given with --config sets fields too, flags win. Prints per-epoch metrics with a progress
line, keeps ``checkpoint.pt`` (last epoch) and ``best.pt`` (best validation accuracy) in --out,
and at the end evaluates the best checkpoint once on the test split. ``--resume`` continues from
``--out/checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from trainables import yamlio
from trainables.config import ConfigError, TrialConfig
from trainables.errors import TrialError


class UsageError(TrialError, ValueError):
    """A bad flag, config file or value: reported in one line, exit code 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainables.train",
        usage="%(prog)s [--config FILE] [--out DIR] [--resume] [--json] [--KEY VALUE ...]",
        description="Train one RRA model (no Ray). Every trial config key is a flag; values are YAML.",
    )
    parser.add_argument("--config", type=Path, help="YAML file of trial config keys")
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--json", action="store_true", help="print each epoch's metrics as a JSON line")
    group = parser.add_argument_group("trial config (defaults: the embedded CPU default)")
    defaults = TrialConfig().to_dict()
    for key in TrialConfig.field_names():
        group.add_argument(f"--{key.replace('_', '-')}", dest=f"cfg_{key}", metavar="V",
                           help=f"default: {defaults[key]}")
    return parser


def config_from_args(args: argparse.Namespace) -> TrialConfig:
    """Merges the YAML file and the flags into a validated TrialConfig."""
    values: dict[str, Any] = {}
    if args.config is not None:
        try:
            loaded = yamlio.load(args.config.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"cannot read config {args.config}: {err}".splitlines()[0]) from None
        if not isinstance(loaded, dict):
            raise UsageError(f"config {args.config}: expected a mapping of trial config keys")
        values.update(loaded)
    text_keys = TrialConfig.text_keys()
    for key in TrialConfig.field_names():
        raw = getattr(args, f"cfg_{key}")
        if raw is None:
            continue
        if key in text_keys and raw != "null":
            values[key] = raw  # a path or name stays text even if it looks like a number
            continue
        try:
            values[key] = yamlio.load(raw)
        except yaml.YAMLError:
            raise UsageError(f"--{key.replace('_', '-')}: cannot parse {raw!r}") from None
    return TrialConfig.from_dict(values)


class _Printer:
    """Progress on one line while an epoch runs, then the epoch's metrics."""

    def __init__(self, epochs: int, as_json: bool) -> None:
        self.epochs, self.as_json, self.epoch = epochs, as_json, 1
        self.tty = sys.stderr.isatty()

    def progress(self, step: int, total: int) -> None:
        if self.tty:
            print(f"\repoch {self.epoch}/{self.epochs} batch {step}/{total}", end="", file=sys.stderr, flush=True)

    def epoch_done(self, metrics: dict[str, float]) -> None:
        if self.tty:
            print("\r\033[K", end="", file=sys.stderr)
        if self.as_json:
            print(json.dumps(metrics), flush=True)
        else:
            print(
                f"epoch {int(metrics['epoch'])}/{self.epochs}  loss {metrics['train_loss']:.3f}  "
                f"train {metrics['train_acc']:.3f}  val {metrics['val_acc']:.3f} "
                f"(global {metrics['val_acc_global']:.3f}, local {metrics['val_acc_local']:.3f})  "
                f"lr {metrics['lr']:.2e}  {metrics['epoch_seconds']:.1f}s  {metrics['images_per_second']:.0f} img/s",
                flush=True,
            )
        self.epoch = int(metrics["epoch"]) + 1


def train(cfg: TrialConfig, out: Path, resume: bool, as_json: bool = False) -> dict[str, float]:
    """Trains, checkpointing each epoch; returns the best checkpoint's validation and test accuracy."""
    import torch

    from trainables.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
    from trainables.loop import evaluate, fit, make_loader

    out.mkdir(parents=True, exist_ok=True)
    start = None
    if resume:
        path = out / CHECKPOINT_NAME
        if not path.is_file():
            raise UsageError(f"--resume: no checkpoint at {path}")
        start = load_checkpoint(path)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    printer = _Printer(cfg.epochs, as_json)
    best = {"acc": -1.0}
    if start is not None and (out / "best.pt").is_file():
        best["acc"] = float(start["best_val_acc"])
        printer.epoch = int(start["epoch"]) + 1

    def on_epoch(metrics: dict[str, float], state: dict[str, Any]) -> None:
        save_checkpoint(out / CHECKPOINT_NAME, state)
        if metrics["val_acc"] > best["acc"]:
            best["acc"] = metrics["val_acc"]
            save_checkpoint(out / "best.pt", {"model": state["model"], "epoch": state["epoch"],
                                              "val_acc": metrics["val_acc"]})
        with (out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        printer.epoch_done(metrics)

    trial = fit(cfg, on_epoch, resume=start, progress=printer.progress)
    best_state = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    trial.model.load_state_dict(best_state["model"])
    test = evaluate(trial.model, make_loader(trial.data.test, cfg, trial.device, False), cfg, trial.device)
    result = {"best_epoch": best_state["epoch"], "val_acc": best_state["val_acc"], "test_acc": test["acc"],
              "test_acc_global": test["acc_global"], "test_acc_local": test["acc_local"]}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"best epoch {result['best_epoch']}: val {result['val_acc']:.3f}; test {result['test_acc']:.3f} "
          f"(global {result['test_acc_global']:.3f}, local {result['test_acc_local']:.3f}); results in {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        train(cfg, args.out, args.resume, args.json)
    except (UsageError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrialError as err:  # bad data, weights, a diverged loss: the user's to fix
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
