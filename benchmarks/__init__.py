"""stepcache's benchmark suite: ``python -m benchmarks [--quick] [--json FILE] [--plot FILE]``.

Each ``bench_*`` module measures one scenario and has ``run(quick) -> dict``;
``scenarios`` lists them with the goals their figures are judged against, and
``__main__`` runs them and writes the tables, the JSON and the plot. See
``docs/benchmarks.md``.
"""
