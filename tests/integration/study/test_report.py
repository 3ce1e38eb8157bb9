"""The report of a real smoke study (with a one-seed confirmation), checked against MLflow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

# one worker of `make test` runs the module, so its study (a module fixture) runs once, not once a worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("report-study")]

ROOT = Path(__file__).resolve().parents[3]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cwd = tmp_path_factory.mktemp("report")
    proc = subprocess.run([sys.executable, "-m", "study.run", "--quiet", "--space", "smoke", "--name", "rep",
                           "--confirm-seeds", "1"], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = cwd / "runs" / "rep"
    client = MlflowClient(f"sqlite:///{cwd / 'runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rep")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    return {"cwd": cwd, "folder": folder, "report": folder / "report", "stdout": proc.stdout, "client": client,
            "parent": parent, "children": [r for r in runs if r.info.run_id != parent.info.run_id]}


def test_the_study_writes_a_report_with_its_pictures(study: dict[str, Any]) -> None:
    report = study["report"]
    assert f"Report: {report / 'report.html'}" in study["stdout"]
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5  # four plots and the attention pictures
    md = (report / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 5 and all((report / link).is_file() for link in links)
    for section in ("Best configurations", "Gain over the global-only baseline", "Could early stopping be trusted?",
                    "Factors at equal fidelity", "Interaction: recursion_steps x crop_scale",
                    "Hyperparameter importance", "What the best trial looks at", "Confirmation",
                    "Accuracy against inference cost"):
        assert f"## {section}" in md
    # smoke names its best on two seeds: the finalists' table, and what the noise allows
    assert "**Named on several seeds.**" in md and "| finalist | new seeds | mean val_acc | 95% interval | gap to the best | P(best) |" in md
    assert "What the noise allows" in md or "no difference between levels can be told from the noise" in md


def test_report_tables_agree_with_the_mlflow_runs(study: dict[str, Any]) -> None:
    client, parent = study["client"], study["parent"]
    runs = [r for r in study["children"] if r.data.tags["kind"] in ("search", "baseline")]
    table = pd.read_parquet(study["report"] / "trials.parquet")
    assert len(runs) == 5 == table["trial_id"].nunique()
    assert table["cost_flops_per_image"].gt(0).all() and table["cost_parameters"].gt(0).all()  # per trial
    curves = {}
    for run in runs:
        rows = table[table["trial_id"] == run.data.tags["tune_trial_id"]]
        assert rows["outcome"].iloc[0] == run.data.tags["outcome"]
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_acc"))
        assert history == list(zip(rows["epoch"], rows["val_acc"], strict=True))
        curves[run.info.run_id] = dict(history)
    # equal-fidelity factor statistics recomputed from MLflow alone
    factors = pd.read_parquet(study["report"] / "factors.parquet")
    for rung in (1, 3):
        by_level: dict[str, list[float]] = {}
        for run in runs:
            steps = run.data.params.get("searched.recursion_steps")
            if steps is not None and rung in curves[run.info.run_id]:
                by_level.setdefault(steps, []).append(curves[run.info.run_id][rung])
        ours = factors[(factors.factor == "recursion_steps") & (factors.rung == rung)].set_index("level")
        for level, values in by_level.items():
            assert ours.loc[level, "n"] == len(values)
            assert ours.loc[level, "mean"] == pytest.approx(sum(values) / len(values))
    def no_nan(constant: str) -> None:
        raise AssertionError(f"report.json is not strict JSON: {constant}")

    facts = json.loads((study["report"] / "report.json").read_text(), parse_constant=no_nan)
    assert facts["mlflow_disagreements"] == []
    assert facts["best"]["name"] == parent.data.tags["best_trial"]
    assert facts["best"]["test_acc"] == pytest.approx(parent.data.metrics["best_test_acc"])
    (gain,) = facts["gain"]
    assert gain["gain_val_acc"] == pytest.approx(parent.data.metrics["best_val_acc"]
                                                 - parent.data.metrics["baseline-global_only_val_acc"])
    assert gain["gain_test_acc"] == pytest.approx(parent.data.metrics["best_test_acc"]
                                                  - parent.data.metrics["baseline-global_only_test_acc"])


def test_the_report_is_logged_to_the_parent_run(study: dict[str, Any]) -> None:
    client, parent = study["client"], study["parent"]
    top = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/trials.parquet", "report/report.json"} <= top
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "report/figures")}
    assert "report/figures/attention.png" in figures and len(figures) == 5
    assert client.get_run(parent.info.run_id).data.tags["report"] == "report/report.html"


def test_confirmation_runs_every_variation_with_seeds_at_full_budget(study: dict[str, Any]) -> None:
    confirm = pd.read_parquet(study["folder"] / "confirm.parquet")
    # best + 2 ends of each of the 3 factors (temperature is active at a best point with T > 1) + baseline
    trials = confirm.groupby("trial_id").tail(1)
    assert set(trials["epochs_run"]) == {3} and trials["test_acc"].notna().all()
    variants = trials["variant"].value_counts().to_dict()
    assert variants["best"] == 1 and variants["baseline-global_only"] == 1
    assert variants["recursion_steps"] == 2 and variants["crop_scale"] == 2
    runs = [r for r in study["children"] if r.data.tags["kind"] == "confirm"]
    assert len(runs) == len(trials) and all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.params["epochs"] == "3" for r in runs)
    assert {r.data.params["seed"] for r in runs} == {"1"}  # the study trains with seed 0; re-runs take 1, 2, ...


def test_report_command_on_an_existing_study_and_its_errors(study: dict[str, Any]) -> None:
    cwd = study["cwd"]
    proc = subprocess.run([sys.executable, "-m", "study.report", "--name", "rep", "--no-pictures"], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "attention.png" not in (study["report"] / "report.md").read_text()
    missing = subprocess.run([sys.executable, "-m", "study.report", "--name", "nope"], cwd=cwd, env=ENV,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no study 'nope'")
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = subprocess.run([sys.executable, "-m", "study.report", "--name", "rep", "--confirm-seeds", "-1"], cwd=cwd,
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--confirm-seeds" in bad.stderr and "Traceback" not in bad.stderr
