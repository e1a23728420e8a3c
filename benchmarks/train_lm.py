"""The main job: train a small character-level transformer LM with several optimizers.

    pip install -e ".[bench]" && python benchmarks/train_lm.py

The code is the package ``benchmarks/lm/``; ``--help`` lists the optimizers and options.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository root

from benchmarks.lm.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
