"""benchmarks.flops: the counts against closed forms of the networks' matmuls, the memory tracker's accounting, the
batch arithmetic, and the whole report end to end (bench)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import Flux2Transformer2DModel
from torch import nn
from transformers import Qwen3Config, Qwen3ForCausalLM

from benchmarks import flops, klein_public
from pipeline.model.build import cast

TINY_TRANSFORMER = dict(
    klein_public.TRANSFORMER_4B, in_channels=8, num_layers=1, num_single_layers=1, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=12, timestep_guidance_channels=16, axes_dims_rope=(4, 4, 4, 4),
)
TINY_TEXT = dict(
    klein_public.TEXT_ENCODER_4B, vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=28,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8,
)


def flux2_step_flops(c: dict, batch: int, n_img: int, n_txt: int) -> int:
    """Closed form of Flux2Transformer2DModel's matmuls (2 FLOPs per multiply-add), per forward."""
    d = c["num_attention_heads"] * c["attention_head_dim"]
    m = int(d * c["mlp_ratio"])
    s = n_img + n_txt
    per_sequence = 2 * (c["timestep_guidance_channels"] * d + d * d)  # timestep embedder
    per_sequence += 2 * d * (6 * d + 6 * d + 3 * d)  # modulations: image and text (2 sets each), single (1 set)
    per_sequence += 2 * d * 2 * d  # norm_out's scale and shift
    per_token = 2 * (4 * d * d + 2 * d * m + m * d)  # double block, either stream: q, k, v, out, SwiGLU in and out
    single = 2 * (d * (3 * d + 2 * m) + (d + m) * d)  # fused qkv + MLP in, fused out
    linear = 2 * n_txt * c["joint_attention_dim"] * d + 2 * 2 * n_img * c["in_channels"] * d  # embedders, proj_out
    linear += s * (c["num_layers"] * per_token + c["num_single_layers"] * single)
    attention = (c["num_layers"] + c["num_single_layers"]) * 4 * s * s * d  # Q K^T and scores x V
    return batch * (per_sequence + linear + attention)


def qwen3_flops(c: dict, batch: int, tokens: int) -> int:
    """Closed form of Qwen3ForCausalLM's matmuls over `tokens` tokens, logits included."""
    h, hd, heads, kv = c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    per_token = 2 * (h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * c["intermediate_size"])
    attention = 4 * tokens * tokens * heads * hd
    logits = 2 * tokens * h * c["vocab_size"]
    return batch * (c["num_hidden_layers"] * (tokens * per_token + attention) + logits)


def _meta_klein(transformer_config: dict | None = None, text_config: dict | None = None) -> flops.Klein:
    with torch.device(flops.META):
        transformer = Flux2Transformer2DModel(**transformer_config) if transformer_config else nn.Identity()
        text = Qwen3ForCausalLM(Qwen3Config(**text_config)) if text_config else nn.Identity()
    return flops.Klein(cast(transformer, dtype=flops.KLEIN_DTYPE), cast(text, dtype=flops.KLEIN_DTYPE), None)


@pytest.mark.parametrize(("px", "batch"), [(64, 1), (64, 2), (128, 1)])
def test_transformer_step_equals_the_closed_form(px, batch):
    """Exact: every matmul of the step is accounted for, and the image tokens are latents + crop + reference."""
    k = _meta_klein(TINY_TRANSFORMER)
    counted = flops.count_flops(lambda: flops.klein_step(k, batch, px, px))
    n_img = 3 * (px // flops.PATCH) ** 2
    assert counted == flux2_step_flops(TINY_TRANSFORMER, batch, n_img, flops.MAX_SEQUENCE_LENGTH)


def test_public_4b_step_at_512_px():
    """The issue's first estimate (about 26 TFLOP a step at 512 px) is the closed form of the public config."""
    k = _meta_klein(klein_public.TRANSFORMER_4B)
    counted = flops.count_flops(lambda: flops.klein_step(k, 1, 512, 512))
    assert counted == flux2_step_flops(klein_public.TRANSFORMER_4B, 1, 3 * 32 * 32, 512)
    assert counted == pytest.approx(25.96e12, rel=1e-3)


def test_a_larger_reference_adds_condition_tokens():
    k = _meta_klein(TINY_TRANSFORMER)
    assert flops.image_tokens(512, 1024) == (1024, 1024 + 4096)
    counted = flops.count_flops(lambda: flops.klein_step(k, 1, 64, 128))
    assert counted == flux2_step_flops(TINY_TRANSFORMER, 1, 16 + 16 + 64, flops.MAX_SEQUENCE_LENGTH)


@pytest.mark.parametrize("batch", [1, 2])
def test_text_encoder_equals_the_closed_form(batch):
    """512 tokens whatever the prompt (the tokenizer pads to max_length), through every layer and the LM head."""
    k = _meta_klein(text_config=TINY_TEXT)
    counted = flops.count_flops(lambda: flops.klein_text(k, batch))
    assert counted == qwen3_flops(TINY_TEXT, batch, flops.MAX_SEQUENCE_LENGTH)


def test_activation_peak_counts_inputs_and_outputs_not_weights():
    """Linear 1024 -> 4096, GELU, Linear -> 1024 on 8 bf16 rows: the peak is the input, the first linear's output
    and GELU's output alive together; the 16 MiB of weights are left out."""
    with torch.device(flops.META):
        net = nn.Sequential(nn.Linear(1024, 4096), nn.GELU(), nn.Linear(4096, 1024)).to(torch.bfloat16)
    peak = flops.peak_activation_bytes([net], lambda: net(flops._zeros(8, 1024)))
    assert peak == 8 * 1024 * 2 + 2 * (8 * 4096 * 2)


def test_attention_memory_is_linear_in_tokens():
    """As with a flash kernel, doubling the sequence doubles the peak: SDPA's math path (the one meta tensors take)
    would hold the S x S scores, 4x."""

    def attend(tokens: int) -> int:
        def run():
            q = flops._zeros(1, 2, tokens, 64)
            return F.scaled_dot_product_attention(q, q, q)

        return flops.peak_activation_bytes([], run)

    assert attend(2048) == 2 * attend(1024)
    assert attend(1024) < 2 * 1024 * 1024 * 2  # far below one head's 1024 x 1024 bf16 scores


def test_linear_fit_and_batch_that_fits():
    assert flops._linear_fit(lambda b: 7 + 3 * b) == {"fixed": 7, "per_image": 3}
    phases = {"a": {"fixed": 5, "per_image": 10}, "b": {"fixed": 0, "per_image": 12}}
    assert flops.batch_that_fits(100, 40, phases) == 5  # b: 40 + 5 x 12 = 100
    assert flops.batch_that_fits(100, 95, phases) == 0


def test_a10g_batches_leave_the_offloaded_text_encoder_out():
    gib = 2**30
    weights = {"transformer": 7 * gib, "text_encoder": 8 * gib, "vae": 0}
    phases = {"text_encoder": {"fixed": 0, "per_image": gib // 4}, "denoise": {"fixed": 0, "per_image": gib}}
    budget_gib = (flops.A10G_TOTAL_MIB - flops.A10G_RESERVE_MIB) / 1024  # 20.99
    out = flops.a10g_batches(weights, phases)
    assert out == {"text_encoder_resident": int(budget_gib - 15), "text_encoder_offloaded": int(budget_gib - 7)}


def test_throughput_per_gpu():
    out = flops.throughput(989e12, mfu=0.5)["H100 SXM"]
    assert out == pytest.approx({"s_at_peak": 1.0, "s_at_mfu": 2.0, "images_per_hour_at_mfu": 1800.0})


@pytest.mark.bench
def test_report_end_to_end(tmp_path, capsys):
    """The whole report at one size: per-image totals are their parts, the tables print."""
    out = tmp_path / "flops.json"
    assert flops.main(["--sizes", "512", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    klein, dtc = report["klein"]["512"], report["dtc"]["512"]
    assert klein["per_image"] == 4 * klein["step"] + klein["text_encoder"] + klein["vae_encode"] + klein["vae_decode"]
    assert dtc["per_image"] == 40 * dtc["step"] + dtc["other"] + dtc["vae_encode"] + dtc["vae_decode"]
    assert report["parameters"]["transformer"] == pytest.approx(3.876e9, rel=1e-3)
    assert report["memory"]["512"]["a10g_batch"]["text_encoder_offloaded"] > 0
    assert "| klein 4B | 512 |" in capsys.readouterr().out
