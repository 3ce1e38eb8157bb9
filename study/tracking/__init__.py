"""MLflow tracking of a study: one experiment, a parent run, one nested child run per trial.

The parent run holds the space, dataset, settings, git revision and library versions, and at
the end the best config with its validation and test accuracy. Each child run is named from
its searched values (T4-s0.35-tau0.7), holds the resolved TrialConfig as params and per-epoch
metrics, and a tag `outcome` (completed / stopped_early / errored). Runs are found again by
their `tune_trial_id` tag, so a resumed study or a retried trial keeps exactly one run per
trial.

Every MLflow call of a study goes through `MlflowQueue` (`queue.py`), so Tune's event loop never
waits on MLflow; what a queue could not send before the study ended is sent by `sync`
(`sync.py`), from Tune's results, the next time the study (or its report) runs. The phases call
the verbs of `parent.py`; `callback.py` is Tune's side; `client.py` the experiment and its runs.
Every MLflow call of the study is in this package.
"""

from study.tracking.callback import TrialRunsCallback
from study.tracking.client import PARENT_TAG, Tracker
from study.tracking.parent import (
    FRONT_TAG,
    RANK_METRIC,
    disagreements,
    log_best,
    log_report,
    parent_payload,
    reconnect,
    settle,
    start,
)
from study.tracking.queue import MlflowQueue, unreachable
from study.tracking.sync import sync

__all__ = ["FRONT_TAG", "PARENT_TAG", "RANK_METRIC", "MlflowQueue", "Tracker", "TrialRunsCallback", "disagreements",
           "log_best", "log_report", "parent_payload", "reconnect", "settle", "start", "sync", "unreachable"]
