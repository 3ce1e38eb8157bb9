from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from ray import tune

from tests.conftest import TINY, tiny_config
from trainables.backbones import create_backbone
from trainables.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from trainables.data import build
from trainables.loop import evaluate, fit, make_loader
from trainables.trainable import evaluate_checkpoint, final_state, train_rra


class _FakeTune:
    """Records what the trainable reports, and hands it a checkpoint to resume from."""

    def __init__(self, start: tune.Checkpoint | None = None) -> None:
        self.start = start
        self.reports: list[tuple[dict[str, float], dict[str, Any]]] = []

    def get_checkpoint(self) -> tune.Checkpoint | None:
        return self.start

    def report(self, metrics: dict[str, float], checkpoint: tune.Checkpoint | None = None) -> None:
        if checkpoint is None:
            self.reports.append((metrics, {}))
            return
        with checkpoint.as_directory() as folder:
            self.reports.append((metrics, load_checkpoint(Path(folder) / CHECKPOINT_NAME)))


def test_reports_every_epoch_with_a_checkpoint_and_resumes_from_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = _FakeTune()
    monkeypatch.setattr(tune, "get_checkpoint", fake.get_checkpoint)
    monkeypatch.setattr(tune, "report", fake.report)
    train_rra({**TINY, "epochs": 3})
    assert [m["epoch"] for m, _ in fake.reports] == [1, 2, 3]
    assert [s["epoch"] for _, s in fake.reports] == [1, 2, 3]

    # A retried trial gets its epoch-2 checkpoint back and reports only epoch 3, with the
    # same numbers as the uninterrupted run.
    save_checkpoint(tmp_path / CHECKPOINT_NAME, fake.reports[1][1])
    retry = _FakeTune(tune.Checkpoint.from_directory(str(tmp_path)))
    monkeypatch.setattr(tune, "get_checkpoint", retry.get_checkpoint)
    monkeypatch.setattr(tune, "report", retry.report)
    torch.manual_seed(99)
    train_rra({**TINY, "epochs": 3})
    assert [m["epoch"] for m, _ in retry.reports] == [3]
    timing = ("epoch_seconds", "images_per_second", "val_seconds")
    same = {k: v for k, v in retry.reports[0][0].items() if k not in timing}
    assert same == {k: v for k, v in fake.reports[2][0].items() if k not in timing}


def test_checkpoints_only_at_the_epochs_asked_and_the_last_holds_the_model_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _FakeTune()
    monkeypatch.setattr(tune, "get_checkpoint", fake.get_checkpoint)
    monkeypatch.setattr(tune, "report", fake.report)
    train_rra({**TINY, "epochs": 4}, checkpoint_epochs=(2, 4))
    assert [m["epoch"] for m, _ in fake.reports] == [1, 2, 3, 4]  # every epoch is reported
    saved = {int(m["epoch"]): state for m, state in fake.reports if state}
    assert sorted(saved) == [2, 4]
    assert {"model", "optimizer", "rng", "scheduler"} <= set(saved[2])  # what a retry resumes from
    assert "model" in saved[4] and not {"optimizer", "rng", "scheduler"} & set(saved[4])


def test_a_checkpoint_is_evaluated_without_training_data_optimizer_or_pretrained_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    weights = tmp_path / "tiny.pth"
    torch.save(create_backbone("tiny").features.state_dict(), weights)
    cfg = tiny_config(epochs=1, backbone="tiny", weights=str(weights))
    states: list[dict[str, Any]] = []
    trial = fit(cfg, lambda m, s: states.append(s))
    save_checkpoint(tmp_path / "trial" / CHECKPOINT_NAME, final_state(states[-1]))
    expected = {split: evaluate(trial.model, make_loader(getattr(trial.data, split), cfg, trial.device, False), cfg,
                                trial.device) for split in ("test", "val")}
    weights.unlink()  # the checkpoint holds every weight: the pretrained file is not read again
    generated: list[str] = []
    real = build.generate
    monkeypatch.setattr(build, "generate", lambda spec, split: generated.append(split) or real(spec, split))
    for split in ("test", "val"):
        generated.clear()
        got = evaluate_checkpoint(cfg.to_dict(), str(tmp_path / "trial"), split)
        assert got == {f"{split}_{k}": v for k, v in expected[split].items()}
        assert generated == [{"test": "test", "val": "train"}[split]]  # the split's images alone
