"""The training job: turn a starting DTC (public weights converted, a checkpoint, or a named random one) into a
trained DTC on the user's image pairs, with Ray Train on the same cluster.

    tryall train --config configs/train.yaml --set run_id=dtc-v1 --set compute.num_workers=1   # locally, on CPU
    tryall submit train --config configs/train.yaml --set run_id=dtc-v1                         # on the cluster

Writes `<output_uri>/<run_id>/`: `checkpoint_<step>/` (`model/` is a DTC checkpoint for `model.source`; the optimizer
state and `train_state.json` beside it), `metrics.jsonl`, `samples/step_<step>.png` (contact sheets), `config.json`.
Submitting the same run_id again resumes from its latest checkpoint and continues to `train.steps`. Exit status 2:
bad settings or manifest, a model that cannot be read, or a loss that went NaN or exploded (`stopped.json` says
where; the checkpoints before it are kept).
"""

from __future__ import annotations

import json
import sys

from jobs.cli import job_main
from pipeline.train.config import TrainConfig
from pipeline.train.trainer import train as run_training


def train(cfg: TrainConfig) -> int:
    outcome = run_training(cfg)
    print(json.dumps({"run_uri": outcome.run_uri, "steps": outcome.steps, "checkpoint": outcome.checkpoint_uri,
                      "metrics": outcome.metrics}, indent=2))
    if outcome.checkpoint_uri:
        print(f"trained model: {outcome.checkpoint_uri}/model (use it as model.source)")
    return 0


main = job_main("train", TrainConfig, train)

if __name__ == "__main__":
    sys.exit(main())
