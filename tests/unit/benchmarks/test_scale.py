"""The scale benchmark's split of the slots' idle time: turnaround between trials, and the tail."""

from __future__ import annotations

import pytest

from benchmarks.scale import _tail_figures


def test_turnaround_and_tail_are_told_apart() -> None:
    # 2 slots, 4 trials: slot A runs [0, 10] then [11, 30]; slot B runs [0, 10] then [12, 14].
    # The last trial starts at 12; before it, 1 + 2 s of the 24 slot-seconds had no trial
    # (over the 2 trials that waited for a slot); after it, slot B idles from 14 to 30.
    starts, ends = [0.0, 0.0, 11.0, 12.0], [10.0, 10.0, 30.0, 14.0]
    figures = _tail_figures(starts, ends, slots=2)
    assert figures["turnaround_s_per_trial"] == pytest.approx(1.5)
    assert figures["slot_share_busy_until_last_start"] == pytest.approx(21 / 24, abs=1e-3)
    assert figures["tail_s"] == pytest.approx(18.0)
    assert figures["tail_slot_share_without_trial"] == pytest.approx(16 / 60, abs=1e-3)
