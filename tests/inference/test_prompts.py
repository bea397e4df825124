"""Prompt templates over catalogue fields, and each model's sampling defaults under the run's settings."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.core.model_families import DTC_DEFAULTS, KLEIN_DISTILLED_DEFAULTS, KLEIN_TINY_DEFAULTS
from pipeline.core.settings import ConfigError
from pipeline.inference.config import RunConfig, load_config
from pipeline.inference.prompts import DEFAULT_PROMPT, known_prompts, render, template_fields

BASE = ["run_id=r", "catalogue_uri=c.parquet", "scenes_uri=s.parquet", "output_uri=out"]


def test_templates_render_category_and_title():
    assert render("a {category}: {title}", "sofa", "Oslo 3-seat") == "a sofa: Oslo 3-seat"
    assert render("a {category}: {title}", "sofa", None) == "a sofa: sofa"  # no title: the category
    assert render(DEFAULT_PROMPT, None, None).startswith("Insert the product from")
    assert template_fields("{title} in a {category} {title}") == ("title", "category")


@pytest.mark.parametrize(("template", "message"), [
    ("a {brand}", "names brand"), ("a {}", "positional"), ("a {category", "malformed")])
def test_a_bad_template_stops_the_job(template, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [*BASE, f"sampling.prompt={template}"])


def test_known_prompts_are_the_distinct_ones_up_to_a_limit():
    catalogue = pa.table({"product_id": ["1", "2", "3"], "category": ["sofa", "sofa", "lamp"],
                          "title": ["A", "B", None]})
    assert known_prompts("a {category}", catalogue, 10) == ["a lamp", "a sofa"]
    assert known_prompts("{title}", catalogue, 10) == ["A", "B", "lamp"]
    assert known_prompts("{title}", catalogue, 2) is None
    assert known_prompts("a product", catalogue, 1) == ["a product"]
    assert known_prompts("{title}", catalogue.drop(["title"]), 10) == ["lamp", "sofa"]


def test_a_model_fills_only_what_the_settings_leave_unset():
    cfg = load_config(None, [*BASE, "model.source=klein-tiny", "sampling.steps=8"])
    resolved = cfg.with_model_defaults({"default": KLEIN_TINY_DEFAULTS})
    assert resolved.model.family == "flux2-klein" and resolved.scheduler_name == "flow_match_euler"
    assert (resolved.sampling.steps, resolved.sampling.resolution, resolved.sampling.reference_size) == (8, 64, 64)
    assert resolved.image_settings.reference_size == 64


def test_variants_take_their_own_models_defaults():
    variants = "[{name: d, model: {source: demo}}, {name: k, model: {source: klein}, sampling: {guidance: 3.0}}]"
    cfg = load_config(None, [*BASE, "sampling.resolution=128", f"variants={variants}"])
    demo = DTC_DEFAULTS.__class__(**{**DTC_DEFAULTS.__dict__, "resolution": 64, "steps": 20, "guidance": 2.0})
    resolved = cfg.with_model_defaults({"d": demo, "k": KLEIN_DISTILLED_DEFAULTS})
    d, k = resolved.for_variant("d"), resolved.for_variant("k")
    # The run's explicit resolution wins over both models'; the rest comes from each model, a variant's own wins.
    assert (d.sampling.resolution, d.sampling.steps, d.sampling.guidance, d.model.family) == (128, 20, 2.0, "dtc")
    assert (k.sampling.resolution, k.sampling.steps, k.sampling.guidance, k.model.family) == (128, 4, 3.0,
                                                                                                "flux2-klein")
    assert k.sampling.reference_size == 512 and d.sampling.reference_size == 224
    # What config.json records is explicit: loading it again resolves to the same values.
    again = RunConfig.model_validate(resolved.model_dump())
    assert again.for_variant("k").sampling == k.sampling


@pytest.mark.parametrize(("settings", "defaults", "message"), [
    (["sampling.scheduler=dpmpp"], KLEIN_TINY_DEFAULTS, "samples with its own flow-matching scheduler"),
    (["sampling.strength=0.5"], DTC_DEFAULTS, "applies to FLUX.2 \\[klein\\] only"),
    (["sampling.resolution=72"], KLEIN_TINY_DEFAULTS, "needs a multiple of 16"),
    (["model.family=dtc"], KLEIN_TINY_DEFAULTS, "is a flux2-klein model"),
])
def test_settings_that_do_not_apply_to_the_family_stop_the_job(settings, defaults, message):
    cfg = load_config(None, [*BASE, "model.source=m", *settings])
    with pytest.raises(ConfigError, match=message):
        cfg.with_model_defaults({"default": defaults})
