"""What runs inside a trial, by name (`--trainable`): its Ray function trainable, how it tests
a checkpoint, and which study settings each of them reads.

Adding a trainable is one function module and one entry here (its name listed in
`trainables.names.TRAINABLES`); the driver (study.execution, the report) reads the entry and
never branches on the name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainables import names
from trainables.names import Registry
from trainables.replay import evaluate_replay_checkpoint, train_replay
from trainables.trainable import evaluate_tune_checkpoint, train_rra

Options = Callable[[Mapping[str, Any]], dict[str, Any]]


def _no_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class TrainableKind:
    """One kind of trial.

    Attributes:
        train: the Ray function trainable, `train(config, checkpoint_epochs=..., **train_options)`.
        evaluate: `evaluate(config, tune_checkpoint, split, **evaluate_options)` -> test metrics,
            run as a Ray task with a trial's resources.
        explains: it trains a model whose attention the report can draw.
        train_options, evaluate_options: the keyword arguments each takes, from the study's
            recorded settings.
    """

    train: Callable[..., None]
    evaluate: Callable[..., dict[str, float]]
    explains: bool = True
    train_options: Options = field(default=_no_options)
    evaluate_options: Options = field(default=_no_options)


TRAINABLES: Registry[TrainableKind] = Registry("trainable", names.TRAINABLES)
TRAINABLES.register("rra", TrainableKind(train_rra, evaluate_tune_checkpoint))
TRAINABLES.register("replay", TrainableKind(
    train_replay, evaluate_replay_checkpoint, explains=False,
    train_options=lambda s: {"epoch_seconds": float(s.get("replay_epoch_s", 1.0)), "table": s.get("replay_table")},
    evaluate_options=lambda s: {"table": s.get("replay_table")}))
