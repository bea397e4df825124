"""Evaluation of finished runs: the paper's metrics per pair and per variant, paired A/B statistics, a review page.

`evaluation.evaluate_run(EvalConfig)` writes `eval/metrics.parquet` and `eval/summary.json` into the run folder;
`report.write_report` writes `report/index.html`.
"""
