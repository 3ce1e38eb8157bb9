"""`--extend` end to end through the command line: a replayed study grown from 4 to 8 samples
records what a study started with 8 records; an extension stopped by Ctrl-C is refused a second
`--extend` and continues on `--resume`; the embedded default's real trainable (the smoke space)
grows too. Unit half: tests/unit/study/test_extend.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from mlflow.tracking import MlflowClient

from benchmarks.tables import curves
from tests.unit.study.test_curve_table import EPOCHS, ROOT, _study, write_table

STATES = {"completed": "COMPLETE", "stopped_early": "PRUNED"}


def _recorded(runs: Path, name: str) -> dict[str, Any]:
    """What a finished study recorded: its summary, its Optuna trials, its MLflow runs."""
    summary = json.loads((runs / name / "summary.json").read_text())
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{runs / name / 'optuna.db'}")
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    every = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in every if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in every if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(every) - 1
    return {"summary": summary, "optuna": study.trials, "parent": parent, "children": children}


def _checks(got: dict[str, Any], samples: int) -> None:
    """A finished study of `samples` sampled trials (and its space's baselines): each trial in
    Optuna (in the state its outcome says) and in MLflow (one run, ended), each re-run of the
    ending once."""
    summary, children = got["summary"], got["children"]
    rows = {t["trial_id"]: t for t in summary["trials"]}
    assert sum(summary["counts"].values()) == samples and len(rows) == samples + len(summary["baselines"])
    assert len(got["optuna"]) == samples
    for trial in got["optuna"]:
        assert trial.state.name == STATES[rows[trial.user_attrs["tune_trial_id"]]["outcome"]]
    trials = [c for c in children if c.data.tags["kind"] != "finalist"]
    ids = [c.data.tags["tune_trial_id"] for c in trials]
    assert sorted(ids) == sorted(rows) and len(set(ids)) == len(ids)
    reruns = [c for c in children if c.data.tags["kind"] == "finalist"]
    made = [(c.data.params["seed"], c.info.run_name.split("-seed")[0]) for c in reruns]
    assert len(made) == len(set(made))  # no finalist trained twice with the same seed
    assert all(c.info.status == "FINISHED" for c in children) and got["parent"].info.status == "FINISHED"


def test_a_grown_study_records_what_a_study_started_larger_records_and_an_interrupted_extension_resumes(
        tmp_path: Path) -> None:
    table = write_table(tmp_path)
    common = ("--space", str(curves.SPACE), "--max-epochs", str(EPOCHS), "--trainable", "replay",
              "--replay-epoch-s", "0.5", "--replay-table", str(table), "--no-test", "--policy", "asha",
              "--finalists", "2", "--finalist-seeds", "1")
    runs = tmp_path / "runs"
    first = _study(tmp_path, *common, "--name", "grown", "--num-samples", "4")
    assert first.returncode == 0, first.stderr[-3000:]
    before = _recorded(runs, "grown")
    grown = _study(tmp_path, "--name", "grown", "--extend", "--num-samples", "8")
    assert grown.returncode == 0, grown.stderr[-3000:]
    assert "study grown extended " in grown.stdout and "samples 4 -> 8 (4 trial(s) in Tune experiment grown-ext1)" \
        in grown.stdout
    whole = _study(tmp_path, *common, "--name", "whole", "--num-samples", "8")
    assert whole.returncode == 0, whole.stderr[-3000:]
    after, started = _recorded(runs, "grown"), _recorded(runs, "whole")
    _checks(after, 8)
    _checks(started, 8)
    # the same trial runs, in the same numbers (the grown study keeps, besides, the re-runs of a
    # finalist of its first part that the larger study no longer names)
    def kinds(got: dict[str, Any]) -> list[str]:
        return sorted(c.data.tags["kind"] for c in got["children"] if c.data.tags["kind"] != "finalist")

    assert kinds(after) == kinds(started)
    assert len(after["summary"]["finalists"]) == len(started["summary"]["finalists"]) == 2
    # what was there before is kept: the first part's trials, their Optuna states, their runs
    assert {t.number: t.state for t in before["optuna"]} == {t.number: t.state for t in after["optuna"][:4]}
    assert {c.info.run_id for c in before["children"]} <= {c.info.run_id for c in after["children"]}
    # the policy's rungs judged the new trials against the old ones, and the searcher proposed new points
    judged = [json.loads(line) for line in (runs / "grown" / "rungs.jsonl").read_text().splitlines()]
    assert {e["trial"] for e in judged} >= {t["trial_id"] for t in after["summary"]["trials"] if t["kind"] == "search"}
    assert len({tuple(sorted(t.params.items())) for t in after["optuna"]}) == 8
    # the ending ran again over all the trials; a finalist re-run before kept its re-run
    reruns = pd.read_parquet(runs / "grown" / "finalists.parquet")
    assert set(reruns["experiment"]) <= {"grown", "grown-ext1"}
    pairs = reruns.groupby("trial_id").first()[["finalist_of", "config.seed"]].apply(tuple, axis=1)
    assert not pairs.duplicated().any()
    assert {c.data.tags["tune_trial_id"] for c in after["children"] if c.data.tags["kind"] == "finalist"} \
        == set(reruns["trial_id"])
    # the record's history; the summary, the MLflow parent and the report say it
    record = json.loads((runs / "grown" / "study.json").read_text())
    (step,) = record["extensions"]
    assert step["num_samples"] == [4, 8] and step["trials"] == 4 and step["experiment"] == "grown-ext1"
    assert after["summary"]["experiments"] == ["grown", "grown-ext1"] and len(after["summary"]["extensions"]) == 1
    assert after["parent"].data.tags["extensions"] == "1" and "samples 4 -> 8" in after["parent"].data.tags[
        "extension.1"]
    assert "Extended 1 time(s) after it finished" in (runs / "grown" / "report" / "report.md").read_text()

    # a second extension, stopped by Ctrl-C while its trials run: not finished, so a further
    # --extend is refused; --resume continues it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "study.run", "--quiet", "--name", "grown", "--extend",
                             "--num-samples", "10", "--concurrency", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not any(p.stat().st_size for p in (runs / "grown-ext2").glob("*/result.json")):
        assert proc.poll() is None, "the extension ended before it could be interrupted"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    refused = _study(tmp_path, "--name", "grown", "--extend", "--num-samples", "12")
    assert refused.returncode == 2 and "did not finish (it was interrupted); resume it first" in refused.stderr
    resumed = _study(tmp_path, "--name", "grown", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = _recorded(runs, "grown")
    _checks(final, 10)
    assert final["summary"]["experiments"] == ["grown", "grown-ext1", "grown-ext2"]
    assert final["parent"].data.tags["extensions"] == "2" and final["parent"].data.tags["resumes"] == "1"

    # the study's folder removed and its name used again: Tune would restore the experiments left
    # beside it as the new study's; refused in one line, before a folder is made
    shutil.rmtree(runs / "grown")
    again = _study(tmp_path, *common, "--name", "grown", "--num-samples", "4")
    (line,) = again.stderr.strip().splitlines()[-1:]
    assert again.returncode == 2 and line.startswith(f"error: Tune's storage {runs} holds experiment(s) ")
    assert all(name in line for name in ("grown-finalists", "grown-ext1", "grown-ext2")) and not (runs / "grown").exists()


def test_the_embedded_default_trainable_grows_and_warm_starts_another(tmp_path: Path) -> None:
    """The smoke space: the embedded default's real trainable on synthetic data, small. A study
    grows from 2 samples to 3; another starts its sampler from the grown one's trials."""
    first = _study(tmp_path, "--space", "smoke", "--name", "e", "--num-samples", "2", "--no-report")
    assert first.returncode == 0, first.stderr[-3000:]
    grown = _study(tmp_path, "--name", "e", "--extend", "--num-samples", "3")
    assert grown.returncode == 0, grown.stderr[-3000:]
    got = _recorded(tmp_path / "runs", "e")
    _checks(got, 3)
    assert got["summary"]["best"]["test_acc"] is not None  # the ending's test ran again over all the trials
    assert "Extended 1 time(s)" in (tmp_path / "runs" / "e" / "report" / "report.md").read_text()
    warm = _study(tmp_path, "--space", "smoke", "--name", "w", "--num-samples", "2", "--no-report", "--warm-start", "e")
    assert warm.returncode == 0, warm.stderr[-3000:]
    finished = [t for t in got["optuna"] if t.state.is_finished()]
    assert f"warm start: {len(finished)} trial(s) from sqlite:///{tmp_path / 'runs' / 'e' / 'optuna.db'}#e" \
        in warm.stdout
    _checks(_recorded(tmp_path / "runs", "w"), 2)
