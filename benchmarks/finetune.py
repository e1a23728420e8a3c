"""Orthogonal fine-tuning benchmark: full FT vs LoRA, OFTv2, HRA and Givens adapters.

    python benchmarks/finetune.py | tee benchmarks/results/finetune_cpu.log
    python benchmarks/finetune.py --quick

The code is the package ``benchmarks/finetune_lm/``; this file is its entry point.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository root

from benchmarks.finetune_lm import main  # noqa: E402

if __name__ == "__main__":
    main()
