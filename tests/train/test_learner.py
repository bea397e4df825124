"""One optimizer step on the tiny model: which parameters move, the loss falls, bad losses stop, pickles refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pipeline.model import CheckpointError, load_dtc
from pipeline.train.data import Schedule, load_train_manifest, prepare_batch
from pipeline.train.learner import Learner
from pipeline.train.parts import PAPER, parameter_parts, resolve_trainable
from pipeline.train.perceptual import read_vgg_weights, vgg_features
from pipeline.train.step import Batch
from tests.train._helpers import tiny_config, write_manifest


def batches(cfg, manifest, count: int, batch_size: int):
    """`count` micro-batches of one worker, through the data stage's own batch function."""
    import ray

    schedule = Schedule(rows=manifest.train.num_rows, seed=cfg.train.seed, batch_size=batch_size, world_size=1)
    ref = ray.put(manifest.train)
    out = prepare_batch({"id": np.arange(count * batch_size)}, manifest=[ref], schedule=schedule, rank=0,
                        first_local=0, cfg=cfg.data, s3=None, dropout=cfg.train.reference_dropout)
    columns = {k: torch.from_numpy(v) for k, v in out.items()}
    return [Batch.from_columns({k: v[i * batch_size : (i + 1) * batch_size] for k, v in columns.items()})
            for i in range(count)]


@pytest.fixture
def setup(tmp_path, ray_local):
    manifest_path = write_manifest(tmp_path / "data", 4)
    cfg = tiny_config(manifest_path, tmp_path / "out")
    return cfg, load_train_manifest(str(manifest_path))


def _wake_zero_init(dtc) -> None:
    """A new DTC's FiLM, adapter output and null token are zero, which makes the hint branch's gradients zero on the
    first step (as ControlNet's zero convolutions). Small random values stand in for a model some steps in."""
    gen = torch.Generator().manual_seed(0)
    parts = parameter_parts(dtc)
    with torch.no_grad():
        for name, param in dtc.named_parameters():
            if parts[name] in ("hint.film", "image_encoder.uncond_vector") or name.startswith("hint.adapter.layers.6"):
                param.copy_(torch.randn(param.shape, generator=gen) * 1e-2)


def test_one_step_moves_every_trained_parameter_and_no_frozen_one(setup):
    cfg, manifest = setup
    dtc = load_dtc("tiny", device=torch.device("cpu"), dtype=torch.float32)
    _wake_zero_init(dtc)
    before = {name: p.detach().clone() for name, p in dtc.named_parameters()}
    learner = Learner(dtc, cfg, parts=PAPER, device=torch.device("cpu"))
    batch = batches(cfg, manifest, 1, 4)[0]
    assert batch.drop_reference.any() and not batch.drop_reference.all()  # both token kinds take part
    stats = learner.step([batch])
    assert stats.finite and stats.samples == 4 and learner.step_count == 1
    parts = parameter_parts(dtc)
    unchanged = [n for n, p in dtc.named_parameters() if parts[n] in PAPER and torch.equal(p, before[n])]
    moved_frozen = [n for n, p in dtc.named_parameters() if parts[n] not in PAPER and not torch.equal(p, before[n])]
    assert not unchanged, f"trained parameters that did not change: {unchanged[:5]}"
    assert not moved_frozen, f"frozen parameters that changed: {moved_frozen[:5]}"
    assert set(parts.values()) - set(PAPER) == {"vae", "unet.encoder", "image_encoder.backbone"}


def test_a_few_dozen_steps_overfit_a_handful_of_pairs(setup):
    cfg, manifest = setup
    dtc = load_dtc("tiny", device=torch.device("cpu"), dtype=torch.float32)
    learner = Learner(dtc, cfg, parts=resolve_trainable("all_but_vae"), device=torch.device("cpu"))
    batch = batches(cfg, manifest, 1, 4)[0]  # the same pairs, noise and timesteps every step
    losses = [learner.step([batch]).loss for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_accumulation_equals_the_whole_batch(setup):
    cfg, manifest = setup
    cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"eps": 1e-3})})  # see test_ray_train
    whole, halves = (Learner(load_dtc("tiny", device=torch.device("cpu"), dtype=torch.float32), cfg, parts=PAPER,
                             device=torch.device("cpu")) for _ in range(2))
    four = batches(cfg, manifest, 1, 4)
    two = batches(cfg, manifest, 2, 2)
    whole.step(four)
    halves.step(two)
    pairs = zip(whole.dtc.parameters(), halves.dtc.parameters(), strict=True)
    worst = max((a - b).abs().max().item() for a, b in pairs)
    assert worst < 1e-6, f"weights differ by up to {worst} (one step moves them by about {cfg.optim.lr})"


def test_a_bad_loss_is_not_applied(setup):
    cfg, manifest = setup
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_loss": 1e-6})})
    dtc = load_dtc("tiny", device=torch.device("cpu"), dtype=torch.float32)
    before = [p.detach().clone() for p in dtc.parameters()]
    learner = Learner(dtc, cfg, parts=PAPER, device=torch.device("cpu"))
    stats = learner.step(batches(cfg, manifest, 1, 2))
    assert not stats.finite and learner.step_count == 0
    assert all(torch.equal(a, b) for a, b in zip(before, dtc.parameters(), strict=True))


def test_perceptual_loss_reads_safetensors_and_refuses_pickles(setup, tmp_path):
    cfg, manifest = setup
    pickle = tmp_path / "vgg16.pth"
    torch.save(vgg_features().state_dict(), pickle)
    with pytest.raises(CheckpointError, match="pickle"):
        read_vgg_weights(pickle)
    weights = tmp_path / "vgg16.safetensors"
    save_file({f"features.{k}": v for k, v in vgg_features().state_dict().items()}, str(weights))
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"perceptual_weight": 1.0,
                                                                        "vgg_weights": str(weights)})})
    plain = Learner(load_dtc("tiny", device=torch.device("cpu"), dtype=torch.float32), tiny_config(
        cfg.manifest_uri, cfg.output_uri), parts=PAPER, device=torch.device("cpu"))
    with_vgg = Learner(load_dtc("tiny", device=torch.device("cpu"), dtype=torch.float32), cfg, parts=PAPER,
                       device=torch.device("cpu"))
    batch = batches(cfg, manifest, 1, 2)
    assert with_vgg.step(batch).loss > plain.step(batch).loss


def test_trainable_sets():
    assert resolve_trainable(["hint.film", "unet.decoder"]) == ("unet.decoder", "hint.film")
    assert "vae" not in resolve_trainable("all_but_vae")
    with pytest.raises(ValueError, match="unknown part names"):
        resolve_trainable(["hint.flim"])
