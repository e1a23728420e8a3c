"""The main job: train a small character-level transformer LM with several optimizers.

    pip install -e ".[bench]" && python benchmarks/train_lm.py

The code is the package ``benchmarks/lm/`` (config, registry, loop, report, cli, model, data);
this file is its entry point. ``--help`` lists the optimizers and options.
"""

from lm.cli import main

if __name__ == "__main__":
    main()
