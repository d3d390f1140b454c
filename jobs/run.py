"""The whole pipeline on generated sample data as one Spark application, as `interest-decay run`:
generate -> ingest -> sessionize -> features -> train -> score -> evaluate.

    spark-submit jobs/run.py --conf conf/local.yaml --users 20000
"""

from __future__ import annotations

if __name__ == "__main__":
    from interest_decay.cli import run_stage_script

    run_stage_script("run")
