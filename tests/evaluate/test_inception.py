"""The FID Inception-v3 (pipeline.evaluate.inception): its state dict against the published architecture, its
features, loading from safetensors (local, file://, s3://), refusals, FID through the evaluation's actor path.

No reference implementation runs here: pytorch-fid needs torchvision, which does not import beside this project's
torch, and its weights are not in the test environment. So these tests check the structure against the published
architecture (torchvision's `Inception3` names and shapes, its documented parameter count, the FID graph's pooling
differences) and the behaviour on random weights; they cannot show that real weights give pytorch-fid's numbers.
"""

from __future__ import annotations

import io

import boto3
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

from pipeline.core.errors import JobError
from pipeline.core.settings import ConfigError, load_settings
from pipeline.core.storage import S3Config
from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.embeddings import Encode, prepare_item
from pipeline.evaluate.encoders import load_embedder
from pipeline.evaluate.inception import FIDInception, checked_state_dict, random_fid_inception
from pipeline.evaluate.metrics import frechet_metric
from pipeline.evaluate.weights import INCEPTION, check_source
from pipeline.model.errors import CheckpointError

# Tensors per block: each convolution is conv.weight + bn.{weight, bias, running_mean, running_var,
# num_batches_tracked}; blocks A, B, C, D, E have 7, 4, 10, 6 and 9 convolutions.
TENSORS_PER_BLOCK = {
    "Conv2d_1a_3x3": 6, "Conv2d_2a_3x3": 6, "Conv2d_2b_3x3": 6, "Conv2d_3b_1x1": 6, "Conv2d_4a_3x3": 6,
    "Mixed_5b": 42, "Mixed_5c": 42, "Mixed_5d": 42, "Mixed_6a": 24,
    "Mixed_6b": 60, "Mixed_6c": 60, "Mixed_6d": 60, "Mixed_6e": 60, "Mixed_7a": 36, "Mixed_7b": 54, "Mixed_7c": 54,
}
CHARACTERISTIC_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_4.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.running_var": (192,),
}
# torchvision documents inception_v3's num_params as 27,161,264, with its 1000-way fc and AuxLogits head
# (conv0 768->128 1x1 + BN, conv1 128->768 5x5 + BN, fc 768->1000): the FID network has neither.
TORCHVISION_PARAMS = 27_161_264
HEADS = (2048 * 1000 + 1000) + (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)


@pytest.fixture(scope="module")
def model() -> FIDInception:
    return random_fid_inception()


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (3, 299, 299, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def weights(model, tmp_path_factory):
    """The random weights as a user's conversion of pytorch-fid's file would hold them: the 1008-way fc kept, no
    BatchNorm step counters (weights ported from TensorFlow may lack them)."""
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)
    folder = tmp_path_factory.mktemp("inception")
    save_file(state, str(folder / "model.safetensors"))
    return folder


def test_the_state_dict_is_torchvisions_inception3_without_its_heads(model):
    state = model.state_dict()
    assert list(dict.fromkeys(k.split(".")[0] for k in state)) == list(TENSORS_PER_BLOCK)
    counts = {block: sum(k.split(".")[0] == block for k in state) for block in TENSORS_PER_BLOCK}
    assert counts == TENSORS_PER_BLOCK and len(state) == 564
    suffixes = {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    assert all(".".join(k.split(".")[-2:]) in suffixes for k in state)
    assert {k: tuple(state[k].shape) for k in CHARACTERISTIC_SHAPES} == CHARACTERISTIC_SHAPES
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS - HEADS == 21_785_568
    assert all(m.eps == 0.001 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_the_pool_branches_pool_as_the_fid_graph_does(model):
    x = torch.rand(1, 4, 6, 6) + 1.0
    ones = torch.ones(1, 4, 6, 6)
    # A, C and the first E average over the pixels inside the image: a constant stays constant at the borders.
    for block in (model.Mixed_5b, model.Mixed_6c, model.Mixed_7b):
        assert torch.equal(block.pool(ones), ones)
    # The last E max-pools (torchvision's ImageNet network averages there).
    assert torch.equal(model.Mixed_7c.pool(x), F.max_pool2d(x, 3, stride=1, padding=1))
    assert not torch.allclose(model.Mixed_7c.pool(x), F.avg_pool2d(x, 3, stride=1, padding=1))


def test_features_are_2048_finite_and_differ_between_images(model, images):
    embedder = load_embedder("inception", "tiny", INCEPTION, device="cpu")
    features = embedder.embed(images)
    assert features.shape == (3, 2048) and features.dtype == np.float32 and np.isfinite(features).all()
    assert embedder.dim == 2048 and np.ptp(features, axis=0).max() > 0
    # [-1, 1] inputs, as pytorch-fid scales them; the same images straight through the network agree.
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
    with torch.no_grad():
        np.testing.assert_allclose(features, model(x).numpy(), rtol=1e-5, atol=1e-6)


def test_safetensors_weights_load_back_to_identical_features(model, images, weights, tmp_path):
    expected = load_embedder("inception", "tiny", INCEPTION, device="cpu").embed(images[:2])
    single = tmp_path / "fid.safetensors"
    single.write_bytes((weights / "model.safetensors").read_bytes())
    for source in (str(weights), f"file://{weights}", str(single)):
        assert check_source("inception", source, None) == INCEPTION
        loaded = load_embedder("inception", source, INCEPTION, device="cpu", dtype=torch.float16)
        assert loaded.dtype == torch.float32  # FID's network always runs in fp32
        np.testing.assert_array_equal(loaded.embed(images[:2]), expected)


def test_a_weights_folder_on_s3_is_fetched_to_the_cache_and_loads(weights, images, s3_server, tmp_path):
    bucket = "fid-weights"
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    half = {k: v.half() if v.is_floating_point() else v for k, v in load_file(weights / "model.safetensors").items()}
    local = tmp_path / "half" / "model.safetensors"
    local.parent.mkdir()
    save_file(half, str(local))
    client.upload_file(str(local), bucket, "fid/model.safetensors")
    source = f"s3://{bucket}/fid"
    assert check_source("inception", source, S3Config(endpoint_url=s3_server)) == INCEPTION
    with pytest.raises(JobError, match="a remote source is a folder holding model.safetensors"):
        check_source("inception", f"{source}/model.safetensors", S3Config(endpoint_url=s3_server))
    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    remote = load_embedder("inception", source, INCEPTION, device="cpu", cache_dir=str(tmp_path / "cache"),
                           storage_options=options)
    np.testing.assert_array_equal(remote.embed(images[:1]),
                                  load_embedder("inception", str(local), INCEPTION, device="cpu").embed(images[:1]))


def test_pickles_missing_keys_and_foreign_weights_are_refused(model, weights, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pt_inception-2015-12-05-6726825d.pth").write_bytes(b"never unpickled")
    with pytest.raises(ConfigError, match="encoders.inception.*pickle"):
        load_settings(EvalConfig, None, ["run_folder=x", f"encoders.inception={pickled}/weights.pth"],
                      environment=False)
    with pytest.raises(JobError, match="pickle-format"):
        check_source("inception", str(pickled), None)
    with pytest.raises(CheckpointError, match="pickle-format"):
        load_embedder("inception", str(pickled), INCEPTION, device="cpu")
    with pytest.raises(CheckpointError, match="pickle-format"):
        load_embedder("inception", str(pickled / "pt_inception-2015-12-05-6726825d.pth"), INCEPTION, device="cpu")

    state = load_file(weights / "model.safetensors")
    del state["Mixed_6c.branch7x7dbl_3.conv.weight"]
    broken = tmp_path / "broken.safetensors"
    save_file(state, str(broken))
    with pytest.raises(CheckpointError, match=r"missing keys 1: Mixed_6c\.branch7x7dbl_3\.conv\.weight"):
        load_embedder("inception", str(broken), INCEPTION, device="cpu")

    extra = {**model.state_dict(), "AuxLogits.conv0.conv.weight": torch.zeros(128, 768, 1, 1)}
    extra["Mixed_5b.branch1x1.conv.weight"] = torch.zeros(64, 192, 3, 3)
    with pytest.raises(CheckpointError, match=r"unexpected keys 1: AuxLogits\.conv0\.conv\.weight; mismatched "
                                              r"shapes 1: Mixed_5b\.branch1x1\.conv\.weight \(64, 192, 3, 3\)"):
        checked_state_dict(extra, model, "extra")
    not_safetensors = tmp_path / "renamed.safetensors"
    not_safetensors.write_bytes(b"\x80\x02not a header at all")
    with pytest.raises(JobError, match="not a readable safetensors file"):
        check_source("inception", str(not_safetensors), None)


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_fid_of_a_set_against_itself_is_zero_through_the_actor_path(tmp_path):
    sizes = {"inception": INCEPTION.size}
    rows = []
    for i, pixels in enumerate(np.random.default_rng(1).integers(0, 256, (4, 120, 90, 3), dtype=np.uint8)):
        (tmp_path / f"{i}.png").write_bytes(_png(pixels))
        rows.append(prepare_item({"item": i, "role": "real", "uri": str(tmp_path / f"{i}.png"), "crop": "whole",
                                  "mask_uri": None, "box": None}, sizes, 10**8, None,
                                  fid_resize="pytorch_fid"))
    assert {r["pixels_inception"].shape for r in rows} == {(299, 299, 3)}
    batch = {k: np.stack([r[k] for r in rows]) if isinstance(rows[0][k], np.ndarray)
             else np.array([r[k] for r in rows]) for k in rows[0]}
    cfg = EvalConfig.model_validate({"run_folder": str(tmp_path), "encoders": {"inception": "tiny"}})
    features = Encode(cfg, {"inception": ("tiny", INCEPTION)})(batch)["vectors_inception"]
    assert features.shape == (4, 2048) and set(batch["status"]) == {"ok"}

    same = frechet_metric("fid", features, features)
    trace = float(np.trace(np.cov(features.astype(np.float64), rowvar=False)))
    assert abs(same.value) <= 1e-9 * trace + 1e-12
    assert (same.n_generated, same.n_real, same.biased) == (4, 4, True) and "2048" in same.note
    other = frechet_metric("fid", features[:2], features[2:])
    assert other.value > 1e-3 * trace
