from benchmarks.runner.cli import main

main()
