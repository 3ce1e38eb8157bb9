"""After Tune: the study's child runs made true to Tune's saved experiment (what an outage or a
crash kept from MLflow is sent)."""

from __future__ import annotations

from typing import Any

from study.history import final_attempt
from study.keys import INTERRUPTED, outcome
from study.tracking.client import MAX_BATCH, Tracker, _metrics
from study.tracking.queue import _RunBook, snapshot


def sync(tracker: Tracker, trials: list[Any], frames: dict[str, Any], max_epochs: int, interrupted: bool,
         book: _RunBook | None = None) -> int:
    """Makes the child runs agree with Tune's saved experiment: a run for every trial, every
    epoch Tune recorded, each run's outcome and status (none left RUNNING). Returns how many
    epochs were sent that MLflow lacked (e.g. when the driver ended during an outage).

    Args:
        trials: Tune's trials as saved for a resume (a trial Ctrl-C stopped is saved PENDING,
            to be continued, even though Tune reported it complete).
        frames: Tune's per-trial result tables (ExperimentAnalysis.trial_dataframes).
        interrupted: the study stopped before its end; unfinished trials' runs become KILLED
            with outcome "interrupted" until a resume continues them.
        book: the study queue's own book (run in the queue's thread): the runs it knows and
            the epochs MLflow took from it are not read back, so a study that ends with every
            call sent costs no call per trial here.
    """
    book = book or _RunBook(tracker)
    existing = {r.data.tags.get("tune_trial_id"): r for r in tracker.child_runs()}
    sent = 0
    for trial in trials:
        frame = frames.get(trial.trial_id)
        if trial.trial_id not in existing and (frame is None or frame.empty):
            continue  # never started: no run to make
        run_id = book.run_id(snapshot(trial), existing.get(trial.trial_id), reopen=False)
        history = final_attempt(frame)
        if frame is not None and not history.empty:
            rows = history.to_dict("records")
            logged = book.confirmed.get(trial.trial_id, set())
            if any(int(r["epoch"]) not in logged for r in rows):
                logged = {int(m.step) for m in tracker.client.get_metric_history(run_id, "epoch")}
            missing = [r for r in rows if int(r["epoch"]) not in logged]
            metrics = [m for r in missing for m in _metrics(r, int(r["epoch"]))]
            for i in range(0, len(metrics), MAX_BATCH):
                tracker.client.log_batch(run_id, metrics=metrics[i:i + MAX_BATCH])
            sent += len(missing)
            # every node the trial ran on, those of attempts a retry replaced included
            nodes = [str(n) for n in frame.get("node_ip", []) if isinstance(n, str) and n]
            for node in dict.fromkeys(nodes):
                book.node(snapshot(trial), run_id, node)
        last = int(history["epoch"].iloc[-1]) if not history.empty else 0
        _settle(tracker, run_id, trial, existing.get(trial.trial_id), outcome({"epoch": last}, max_epochs,
                                                                              trial.status == "ERROR"), interrupted)
    known = {t.trial_id for t in trials}
    for trial_id, run in existing.items():
        if trial_id not in known and run.info.status == "RUNNING":  # a trial Tune never saved
            tracker.client.set_tag(run.info.run_id, "outcome", INTERRUPTED)
            tracker.client.set_terminated(run.info.run_id, status="KILLED")
    return sent


def _settle(tracker: Tracker, run_id: str, trial: Any, run: Any, how: str, interrupted: bool) -> None:
    """Ends a finished trial's run with its outcome `how` (an interrupted one's as KILLED)."""
    status = getattr(trial, "status", None)
    if status in ("TERMINATED", "ERROR"):
        errored = status == "ERROR"
        if run is None or run.data.tags.get("outcome") != how or run.info.status == "RUNNING":
            tracker.client.set_tag(run_id, "outcome", how)
            tracker.client.set_terminated(run_id, status="FAILED" if errored else "FINISHED")
    elif interrupted:
        tracker.client.set_tag(run_id, "outcome", INTERRUPTED)
        tracker.client.set_terminated(run_id, status="KILLED")
