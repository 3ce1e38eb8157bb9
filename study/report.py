"""`python -m study.report --name STUDY [--confirm-seeds N]`: the ablation report of a study
(see study.reporting; the command line is study.cli's)."""

from __future__ import annotations

import sys

from study.cli import report_main

if __name__ == "__main__":
    sys.exit(report_main())
