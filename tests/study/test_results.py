"""The results table's storage and the report's input errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from study.results import ReportInputError, save_table, study_folder
from study.runner import _report


def test_parquet_keeps_numbers_and_writes_mixed_columns_as_text(tmp_path: Path) -> None:
    table = pd.DataFrame({"epoch": [1, 2], "val_acc": [0.5, 0.75], "level": [4, "zoom"], "milestones": [[1, 2], [3]],
                          "name": ["a", "b"]})
    out = pd.read_parquet(save_table(table, tmp_path / "t" / "trials.parquet"))
    assert list(out["epoch"]) == [1, 2] and list(out["val_acc"]) == [0.5, 0.75]
    assert list(out["level"]) == ["4", "zoom"]  # an int and a text in one column: text
    assert [list(v) for v in out["milestones"]] == [[1, 2], [3]]


def test_study_folder_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ReportInputError, match=r"no study 'x' in .*study.json is missing"):
        study_folder(str(tmp_path), "x")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "study.json").write_text("{}")
    assert study_folder(str(tmp_path), "x") == tmp_path / "x"


def test_a_failing_report_warns_and_keeps_the_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "study.json").write_text('{"name": "broken", "space": "nowhere.yaml"}')
    _report(folder)  # returns: the study's own results are already recorded
    err = capsys.readouterr().err
    assert err.startswith("warning: the report failed") and "python -m study.report --name broken" in err
    assert folder.is_dir() and (folder / "study.json").is_file()


def test_the_report_reads_the_space_as_the_study_resolved_it(tmp_path: Path) -> None:
    import json

    from study.results import load_study_space

    state = {"space": "smoke", "settings": {"metric": "val_acc", "mode": "max", "max_epochs": 7, "grace_period": 1,
                                            "reduction_factor": 2.0, "num_samples": 2},
             "constants": {"dataset": "cub", "data_dir": "/data/cub"}, "baselines": {}}
    (tmp_path / "study.json").write_text(json.dumps(state))
    space = load_study_space(tmp_path, state)
    assert space.name == "smoke" and space.study.max_epochs == 7
    assert space.constants["dataset"] == "cub" and space.baselines == {}
