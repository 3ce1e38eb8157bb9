"""The study record: resolved once at the start, read back equal; --resume reads it and
refuses a flag that contradicts it. The results table's storage; a failing report."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from study.cli import report_or_warn, resolve
from study.errors import StudyInputError
from study.options import parse_options
from study.record import load
from study.results import save_table


def _started(tmp_path: Path, *flags: str) -> Path:
    """A new study's record written as a study's start writes it (nothing runs)."""
    from study.phases.search import start

    record = start(resolve(parse_options(["--space", "ablation", "--name", "s", "--out", str(tmp_path), *flags])))
    return record.folder


def test_the_record_reads_back_the_study_as_it_was_resolved(tmp_path: Path) -> None:
    folder = _started(tmp_path, "--num-samples", "4", "--max-epochs", "3", "--seed", "7", "--no-baselines",
                      "--policy", "fifo", "--finalists", "2", "--finalist-seeds", "3", "--train-seed", "5")
    record = load(folder)
    assert record.space.study.finalists == 2 and record.space.study.finalist_seeds == 3
    assert record.train_seed == 5 == record.space.constants["seed"]
    assert record.space.study.num_samples == 4 and record.space.study.max_epochs == 3
    assert record.space.study.grace_period == 2 and record.space.baselines == {}
    assert record.settings.seed == 7 and record.settings.policy == "fifo"
    assert record.expected_trials() == 4
    assert record.space.parameters["attention_temperature"].when is not None
    assert record.space.enqueue == ({"recursion_steps": 10, "crop_scale": 0.25, "attention_temperature": 1.0},)
    # the local stores sit with the study's folder, outside the source tree
    assert record.stores.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert record.stores.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert record.tune_path == str(tmp_path / "s")
    assert (folder / "space.yaml").is_file()


def test_every_defining_flag_has_its_place_in_the_record_and_the_settings_are_typed(tmp_path: Path) -> None:
    """The flags that define a study are declared once, on StudyOptions; the record says where
    each one's value is, and its settings are a frozen, typed object that reads back equal."""
    from study.options import DEFINING, StudyOptions
    from study.record import Settings, _recorded_flags

    record = load(_started(tmp_path, "--seed", "3", "--trainable", "replay"))
    assert set(_recorded_flags(record)) == set(DEFINING)
    assert {"space", "seed", "policy", "epoch_budget", "objectives"} <= set(DEFINING)
    assert not {"address", "cpus_per_trial", "concurrency", "verbose", "report"} & set(DEFINING)
    assert {f.name for f in dataclasses.fields(Settings)} <= set(DEFINING)
    assert isinstance(record.settings, Settings) and record.settings.seed == 3
    assert record.settings == Settings.from_json(record.settings.to_json())
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.settings.seed = 4  # type: ignore[misc]
    # a record written before a setting existed reads it as the flag's default
    old = {k: v for k, v in record.settings.to_json().items() if k != "replay_table"}
    assert Settings.from_json(old).replay_table is StudyOptions().replay_table


def test_resume_uses_the_record_not_todays_defaults(tmp_path: Path) -> None:
    _started(tmp_path, "--num-samples", "4", "--max-epochs", "3", "--cpus-per-trial", "2")
    record = resolve(parse_options(["--resume", "--name", "s", "--out", str(tmp_path), "--concurrency", "1"]))
    assert record.space.study.num_samples == 4 and record.space.study.max_epochs == 3  # not the space's 24 / 15
    assert record.resources.concurrency == 1 and record.resources.cpus_per_trial == 2  # kept unless given
    assert record.space.constants["threads"] == 2
    # the trials' threads follow --cpus-per-trial of the resume, not the start's
    again = resolve(parse_options(["--resume", "--name", "s", "--out", str(tmp_path), "--cpus-per-trial", "1"]))
    assert again.resources.cpus_per_trial == 1 and again.space.constants["threads"] == 1
    # without --name: the latest study of that space, whatever its name
    assert resolve(parse_options(["--resume", "--space", "ablation", "--out", str(tmp_path)])).name == "s"
    with pytest.raises(StudyInputError, match="no study of space 'smoke'"):
        resolve(parse_options(["--resume", "--space", "smoke", "--out", str(tmp_path)]))
    # repeating a recorded value is fine
    again = resolve(parse_options(["--resume", "--name", "s", "--out", str(tmp_path), "--max-epochs", "3"]))
    assert again.space == record.space


@pytest.mark.parametrize(("flags", "message"), [
    (["--max-epochs", "15"], "--max-epochs 15 contradicts study 's', which was started with 3"),
    (["--num-samples", "24"], "--num-samples 24 contradicts"),
    (["--seed", "1"], "--seed 1 contradicts"),
    (["--finalists", "0"], "--finalists 0 contradicts study 's', which was started with 3"),
    (["--train-seed", "2"], "--train-seed 2 contradicts study 's', which was started with 0"),
    (["--policy", "fifo"], "--policy fifo contradicts"),
    (["--space", "smoke"], "--space smoke contradicts"),
    (["--dataset", "cub", "--data-dir", "/nowhere"], "--data-dir"),
    (["--tracking-uri", "http://elsewhere:5000"], "--tracking-uri http://elsewhere:5000 contradicts"),
])
def test_a_flag_that_contradicts_the_record_is_refused(tmp_path: Path, flags: list[str], message: str) -> None:
    _started(tmp_path, "--num-samples", "4", "--max-epochs", "3")
    with pytest.raises(StudyInputError, match=message):
        resolve(parse_options(["--resume", "--name", "s", "--out", str(tmp_path), *flags]))


def test_a_missing_or_foreign_record_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StudyInputError, match=r"no study 'x' in .*study.json is missing"):
        load(tmp_path / "x")
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "study.json").write_text('{"name": "y"}')
    with pytest.raises(StudyInputError, match="a study record of another format"):
        load(tmp_path / "y")


def test_a_new_study_refuses_an_existing_name(tmp_path: Path) -> None:
    _started(tmp_path)
    with pytest.raises(StudyInputError, match="study 's' already exists"):
        resolve(parse_options(["--space", "ablation", "--name", "s", "--out", str(tmp_path)]))


def test_parquet_keeps_numbers_and_writes_mixed_columns_as_text(tmp_path: Path) -> None:
    table = pd.DataFrame({"epoch": [1, 2], "val_acc": [0.5, 0.75], "level": [4, "zoom"], "milestones": [[1, 2], [3]],
                          "name": ["a", "b"]})
    out = pd.read_parquet(save_table(table, tmp_path / "t" / "trials.parquet"))
    assert list(out["epoch"]) == [1, 2] and list(out["val_acc"]) == [0.5, 0.75]
    assert list(out["level"]) == ["4", "zoom"]  # an int and a text in one column: text
    assert [list(v) for v in out["milestones"]] == [[1, 2], [3]]


def test_a_failing_report_warns_and_keeps_the_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _started(tmp_path)
    record = dataclasses.replace(load(folder), stores=dataclasses.replace(load(folder).stores,
                                                                          storage_path=str(tmp_path / "gone")))
    report_or_warn(record, mlflow=False)  # no Tune results there: returns, the study's record stays
    err = capsys.readouterr().err
    assert err.startswith("warning: the report failed") and "python -m study.report --name s" in err
    assert (folder / "study.json").is_file()
