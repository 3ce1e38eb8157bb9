"""`python -m study.run --space ablation [flags]`: run (or resume) an RRA hyperparameter study.

Ray Tune runs the trials (a local Ray by default, `--address auto` joins a cluster), the
chosen policy's searcher proposes configurations and its scheduler stops weak trials early,
MLflow records every trial. See study.cli, which composes the phases.
"""

from __future__ import annotations

import sys

from study.cli import main

if __name__ == "__main__":
    sys.exit(main())
