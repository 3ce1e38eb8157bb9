"""The study's report, apart from the phases: its sections and `write_report` (`sections.py`),
the statistics they show (`analysis.py`), the plots (`plots.py`), the document that renders
Markdown and HTML (`document.py`) and the confirmation's ablation tables (`confirmation.py`).
Each reads the study's results model (study.results), never Tune or Ray state directly."""

from study.reporting.sections import write_report

__all__ = ["write_report"]
