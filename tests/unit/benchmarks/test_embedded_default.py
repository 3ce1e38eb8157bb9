"""benchmarks.embedded_default: the command's phases read from its output's arrival times."""

from __future__ import annotations

from benchmarks.embedded_default import phase_seconds


def test_phases_are_the_gaps_between_their_markers_and_the_exit_the_rest() -> None:
    stamped = [(0.5, "2026 INFO ray"), (4.0, "study ablation-1: space ablation"), (9.0, "== Status =="),
               (100.0, "Noise-aware ending: the 3 best"), (150.5, "Best configurations (val_acc"),
               (170.0, "Report: /x/report.html")]
    assert phase_seconds(stamped, wall=175.0) == {"start_up": 4.0, "search": 96.0, "ending_and_test": 50.5,
                                                  "report": 19.5, "exit": 5.0}


def test_a_phase_without_its_line_is_counted_in_the_next() -> None:
    stamped = [(4.0, "study s: space smoke"), (30.0, "Best configurations"), (40.0, "Report: r.html")]
    assert phase_seconds(stamped, wall=41.0) == {"start_up": 4.0, "ending_and_test": 26.0, "report": 10.0,
                                                 "exit": 1.0}
