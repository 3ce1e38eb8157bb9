"""Warm start end to end: a replayed study, then a second one started from it through the command
line; what the second records (summary, MLflow, report), and a source it cannot use."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from benchmarks.tables import curves
from tests.unit.study.test_curve_table import EPOCHS, _study, write_table


def test_a_study_warm_started_from_another_records_what_it_started_from(tmp_path: Path) -> None:
    table = write_table(tmp_path)
    common = ("--space", str(curves.SPACE), "--max-epochs", str(EPOCHS), "--trainable", "replay",
              "--replay-epoch-s", "0", "--replay-table", str(table), "--no-test", "--finalists", "0")
    first = _study(tmp_path, *common, "--name", "first", "--num-samples", "8")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _study(tmp_path, *common, "--name", "second", "--num-samples", "4", "--warm-start", "first")
    assert second.returncode == 0, second.stderr[-3000:]
    runs = tmp_path / "runs"
    source = optuna.load_study(study_name="first", storage=f"sqlite:///{runs / 'first' / 'optuna.db'}")
    finished = [t for t in source.trials if t.state.is_finished()]
    assert f"warm start: {len(finished)} trial(s) from sqlite:///{runs / 'first' / 'optuna.db'}#first" in second.stdout
    # the record keeps the source as given; the summary, MLflow and the report say it
    record = json.loads((runs / "second" / "study.json").read_text())
    assert record["settings"]["warm_start"] == ["first"]
    summary = json.loads((runs / "second" / "summary.json").read_text())
    assert summary["warm_start"] == ["first"] and "Warm-started from: first" in second.stdout
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("second")
    parent = next(r for r in client.search_runs([experiment.experiment_id])
                  if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.tags["warm_start"] == "first"
    assert "Warm-started: the sampler began from the trials of `first`" in (runs / "second" / "report" /
                                                                              "report.md").read_text()
    # the second study's own Optuna study holds its own trials only
    own = optuna.load_study(study_name="second", storage=f"sqlite:///{runs / 'second' / 'optuna.db'}")
    assert len(own.trials) == 4
    # an unknown source: one line, exit 2, before Ray starts (no study folder is made)
    bad = _study(tmp_path, *common, "--name", "third", "--warm-start", "nope")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: --warm-start nope")
    assert not (runs / "third").exists()
