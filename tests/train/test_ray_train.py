"""The training job on a real local Ray (Ray Train workers, gloo DDP) and moto's S3 server."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.core.storage import S3Config, filesystem, storage_options
from pipeline.model import DTCSampler, SampleBatch, SamplingParams, load_dtc
from pipeline.train.data import load_train_manifest
from pipeline.train.learner import Learner
from pipeline.train.parts import resolve_trainable
from pipeline.train.state import MODEL_DIR
from pipeline.train.trainer import TrainingStopped, train
from tests.train._helpers import tiny_config, write_manifest
from tests.train.test_learner import batches

pytestmark = pytest.mark.integration

# Ray's test cluster has 2 CPUs: half a CPU per worker and per data task leaves room for both to run.
SMALL = {"cpus_per_worker": 0.5, "cpus_per_data_task": 0.5, "max_failures": 0}
# Adam's update of a near-zero gradient is about +-lr whatever its last bits, so batched kernels' and the
# all-reduce's rounding would flip single weights by a whole step. A larger eps keeps the update a smooth function of
# the gradient: the comparisons then see the data and the reduction, to float32 rounding.
SMOOTH_ADAM = {"eps": 1e-3}


def reference_weights(cfg, steps: int) -> dict[str, torch.Tensor]:
    """The same run computed in this process by one learner with the whole global batch: the uninterrupted job."""
    manifest = load_train_manifest(cfg.manifest_uri)
    learner = Learner(load_dtc(cfg.model.source, device=torch.device("cpu"), dtype=torch.float32), cfg,
                      parts=resolve_trainable(cfg.train.trainable), device=torch.device("cpu"))
    for batch in batches(cfg, manifest, steps, cfg.global_batch):
        learner.step([batch])
    return {k: v.detach().clone() for k, v in learner.dtc.state_dict().items()}


def assert_same_weights(dtc, reference: dict[str, torch.Tensor]) -> None:
    """Equal to 1e-6: float32 rounding of weights near 1; each step moves them by about lr (1e-3) or more."""
    worst = max((value - reference[name]).abs().max().item() for name, value in dtc.state_dict().items())
    assert worst < 1e-6, f"weights differ by up to {worst}"


def test_two_workers_end_where_one_worker_with_the_doubled_batch_ends(tmp_path, ray_local):
    manifest = write_manifest(tmp_path / "data", 5)
    steps = 3
    two = tiny_config(manifest, tmp_path / "runs", run_id="two", train={"steps": steps, "batch_size": 2},
                      optim=SMOOTH_ADAM, checkpoint={"every_steps": steps}, compute={**SMALL, "num_workers": 2})
    outcome = train(two)
    assert outcome.steps == steps and outcome.checkpoint_uri.endswith("checkpoint_00000003")
    trained = load_dtc(f"{outcome.checkpoint_uri}/{MODEL_DIR}", device=torch.device("cpu"), dtype=torch.float32)
    one = two.model_copy(update={"train": two.train.model_copy(update={"batch_size": 4}),
                                 "compute": two.compute.model_copy(update={"num_workers": 1})})
    assert one.global_batch == two.global_batch
    assert_same_weights(trained, reference_weights(one, steps))


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, ray_local, s3_server):
    """A run on S3 stopped after its step-2 checkpoint and started again to step 4 (bad rows in its manifest)."""
    import boto3

    tmp = tmp_path_factory.mktemp("resumed")
    bucket = "t-train-resumed"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    manifest = write_manifest(tmp / "data", 3, val=1, broken=1)
    s3 = S3Config(endpoint_url=s3_server)
    first = tiny_config(manifest, tmp, run_id="resumed", output_uri=f"s3://{bucket}/runs", s3=s3.model_dump(),
                        train={"steps": 2}, optim=SMOOTH_ADAM, compute=SMALL, log={"sheet_every": 2})
    assert train(first).steps == 2
    second = first.model_copy(update={"train": first.train.model_copy(update={"steps": 4})})
    outcome = train(second)
    model_uri = f"{outcome.checkpoint_uri}/{MODEL_DIR}"
    trained = load_dtc(model_uri, device=torch.device("cpu"), dtype=torch.float32, cache_dir=str(tmp / "cache"),
                       storage_options=storage_options(model_uri, s3))
    return second, outcome, trained


def test_resume_on_s3_ends_where_the_uninterrupted_job_ends(resumed):
    cfg, outcome, trained = resumed
    assert outcome.steps == 4 and outcome.checkpoint_uri == f"{cfg.run_uri}/checkpoint_00000004"
    assert_same_weights(trained, reference_weights(cfg, 4))
    assert trained.provenance["training"]["steps"] == 4
    assert set(trained.provenance["trained_parts"]) == set(resolve_trainable("paper"))


def test_the_run_folder_records_progress_skipped_rows_and_contact_sheets(resumed):
    cfg, _, _ = resumed
    fs, root = filesystem(cfg.run_uri, cfg.s3)
    rows = [json.loads(line) for line in fs.cat_file(f"{root}/metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # the first attempt's rows, then the second's
    assert rows[-1]["skipped_rows"] >= 1 and set(rows[-1]["skipped_by_reason"]) == {"decode_error"}
    assert all(isinstance(rows[-1][k], float) for k in ("loss", "samples_per_s", "eta_s"))
    assert fs.exists(f"{root}/samples/step_00000002.png") and fs.exists(f"{root}/samples/step_00000004.png")
    assert json.loads(fs.cat_file(f"{root}/config.json"))["run_id"] == "resumed"


def test_the_trained_checkpoint_changes_the_inference_images(resumed):
    """An untrained DTC ignores its hint (zero FiLM and adapter output); after training the hint changes what the
    sampler draws. Four steps at lr 1e-3 move the images by less than one uint8 level, so the sampler's float
    images are compared (an untrained model's are exactly equal)."""
    _, _, trained = resumed
    rng = np.random.default_rng(0)
    scene = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    mask = np.zeros((1, 64, 64), bool)
    mask[:, 16:48, 16:48] = True
    hint = np.zeros_like(scene)
    hint[:, 20:44, 20:44] = (250, 20, 20)
    reference = rng.integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)

    def images(dtc, hint):
        batch = SampleBatch(scene=scene, mask=mask, hint=hint, reference=reference, seeds=np.array([5]))
        return DTCSampler(dtc, SamplingParams("ddim", 4, 5.0)).generate_float(batch)

    untrained = load_dtc("tiny", device=torch.device("cpu"), dtype=torch.float32)
    assert np.array_equal(images(untrained, hint), images(untrained, np.zeros_like(hint)))
    change = np.abs(images(trained, hint) - images(trained, np.zeros_like(hint))).max()
    assert change > 1e-6, f"the hint changes the trained model's images by {change} at most"


def test_an_exploding_loss_stops_the_job_and_keeps_the_last_checkpoint(resumed):
    cfg, _, _ = resumed
    exploding = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 6, "max_loss": 1e-6})})
    with pytest.raises(TrainingStopped, match="loss at step 5"):
        train(exploding)
    assert train(cfg).steps == 4  # nothing to do: the latest checkpoint is still step 4
