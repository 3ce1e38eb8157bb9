"""MLflow tracking and its queue against a real, then hung, MLflow server: the tests that start
processes (the rest, and what they share, are in tests/unit/study/test_tracking.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from study.tracking import MlflowQueue, Tracker
from tests.servers import HangingProxy


@pytest.mark.slow  # a real MLflow server
def test_a_hung_server_never_holds_the_caller_and_the_calls_go_through_in_order_once_it_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.servers import free_port, start_mlflow_server, stop_server

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    server = start_mlflow_server(tmp_path, free_port())
    proxy = HangingProxy(int(server.args[server.args.index("--port") + 1]))  # type: ignore[index]
    queue = None
    try:
        tracker = Tracker(f"http://127.0.0.1:{proxy.port}", "hung")
        queue = MlflowQueue(tracker, retry_s=0.2)
        queue.put(lambda: tracker.start({}, {}, {}) and None)

        def put_all() -> None:
            for step in range(1, 51):
                queue.put(lambda step=step: tracker.client.log_metric(tracker.parent_run_id, "val_acc", step / 100,
                                                                      step=step))

        caller = threading.Thread(target=put_all)
        caller.start()
        caller.join(timeout=60)  # a liveness bound, not a speed figure: put never waits on the server
        assert not caller.is_alive() and proxy.hang.is_set()  # all 50 queued while the server answers nothing
        assert not queue.drain(3.0) and queue.pending() > 0 and proxy.accepted >= 1
        proxy.hang.clear()  # the server answers again
        assert queue.drain(60.0), "the queued calls were not sent once the server answered"
        history = tracker.client.get_metric_history(tracker.parent_run_id, "val_acc")
        assert [int(m.step) for m in history] == list(range(1, 51))
    finally:
        if queue is not None:
            queue.close(0)  # its thread stops: a later test in this process counts the queues' threads
        proxy.close()
        stop_server(server)
