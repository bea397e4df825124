"""Settings of any job: a YAML or JSON file, `TRYALL_*` environment variables, `--set a.b=value` overrides.

A job declares one model, a `JobSettings` subclass; `load_settings` builds it from pydantic-settings' own sources.
Precedence, highest first: `--set`, the environment (`TRYALL_SAMPLING__STEPS=20`: sections joined by `__`), the
file, the defaults. Credentials are not settings: S3 access comes from the standard AWS chain only.
"""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticUndefined, to_jsonable_python
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources import DefaultSettingsSource

from pipeline.core.errors import JobError

ENV_PREFIX = "TRYALL_"
# The one dtype vocabulary of every job's settings; pipeline.model.device.DTYPES maps it to torch dtypes.
Dtype = Literal["auto", "fp16", "bf16", "fp32"]


def _multiple_of_8(value: int) -> int:
    if value % 8:
        raise ValueError("must be a multiple of 8 (the VAE downsamples by 8)")
    return value


# A crop size in pixels, for inference and training alike.
Resolution = Annotated[int, AfterValidator(_multiple_of_8)]
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SECRET_WORDS = ("secret", "password", "token", "credential", "access_key")

S = TypeVar("S", bound="JobSettings")


class ConfigError(JobError):
    """The configuration is invalid; the message names each field and the reason."""


class Section(BaseModel):
    """A group of settings inside a job's model (`sampling`, `compute`, ...): unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class JobSettings(BaseSettings):
    """The base of every job's settings model: `TRYALL_` environment names, `__` for sections, unknown keys refused.

    `run_id` is in every job's settings: it names the run and the cluster submission (`<job>-<run_id>`).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    run_id: str = Field(description="names the run: its folder under the output and its submission id")

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str) -> str:
        if not _RUN_ID.match(value) or value in {".", ".."}:
            raise ValueError(
                "must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return value

    @property
    def run_uri(self) -> str | None:
        """Where the job keeps its record (a run folder), for the submission's metadata; None when it has none."""
        return None

    def public_dict(self) -> dict[str, Any]:
        """The resolved settings as JSON data, with anything secret-looking removed."""
        return redact(self.model_dump(mode="json"))

    def config_hash(self) -> str:
        blob = json.dumps(self.public_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def redact(value: Any) -> Any:
    """Drop secret-looking keys and `user:password@` parts of URIs, recursively."""
    if isinstance(value, dict):
        return {
            k: ("<redacted>" if any(w in k.lower() for w in _SECRET_WORDS) else redact(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"(?<=://)[^/@\s]+@", "<redacted>@", value)
    return value


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`["sampling.steps=20", "run_id=x"]` -> nested dict; values parsed as YAML scalars (20 -> int)."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. sampling.steps=20")
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is set both as a value and as a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return result


class _MappingFile:
    """A config file source that refuses a file whose top level is not a mapping."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:
        data = super()._read_file(file_path)  # type: ignore[misc]
        if not isinstance(data, dict):
            raise ConfigError(f"config file {file_path} must hold a mapping of settings, not {type(data).__name__}")
        return data


class _YamlFile(_MappingFile, YamlConfigSettingsSource):
    pass


class _JsonFile(_MappingFile, JsonConfigSettingsSource):
    pass


def _file_source(model: type[JobSettings], path: str | Path) -> PydanticBaseSettingsSource:
    """pydantic-settings' JSON source for `.json`, its YAML source otherwise; errors name the file."""
    path = Path(path)
    if not path.exists():  # pydantic-settings skips missing files silently; a named one must exist
        raise ConfigError(f"config file {path} does not exist")
    try:
        return _JsonFile(model, json_file=path) if path.suffix.lower() == ".json" else _YamlFile(model, yaml_file=path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} could not be read: {exc}") from None


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(config)"
        shown = err.get("input")
        got = "" if isinstance(shown, dict | list) or shown is None else f" (got {shown!r})"
        lines.append(f"  {field}: {err['msg']}{got}")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(
    model: type[S],
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    environment: bool = True,
) -> S:
    """Build a job's settings from the file, the `TRYALL_*` environment and `--set` overrides (highest last).

    `environment=False` leaves the environment out (what a job submitted to the cluster will see). Errors name
    each bad field and why, as a ConfigError (exit status 2).
    """
    sources: list[PydanticBaseSettingsSource] = [InitSettingsSource(model, init_kwargs=parse_overrides(overrides))]
    if environment:
        sources.append(EnvSettingsSource(model))
    if path:
        sources.append(_file_source(model, path))
    sources.append(DefaultSettingsSource(model))
    try:
        # Built on `model` itself (not a subclass with its own sources), so the result pickles: Ray ships it.
        return model(_build_sources=(tuple(sources), {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The Section class an annotation holds (`X` or `X | None`), else None."""
    candidates = [annotation, *get_args(annotation)] if get_origin(annotation) is not Literal else [annotation]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " | ".join(str(v) for v in get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(annotation)).replace("NoneType", "None")  # no module paths


def _shown(value: Any) -> str:
    """A default as one would write it in YAML or `--set` (null, true, 0.25, tiny, [])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(to_jsonable_python(value))


def settings_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted name, type, default, description) for every setting, sections expanded (`sampling.steps`)."""
    rows = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        section = _section_model(field.annotation)
        if section is not None and issubclass(section, Section) and get_origin(field.annotation) is None:
            rows += settings_fields(section, f"{dotted}.")
            continue
        item = _section_model(get_args(field.annotation)[0]) if get_origin(field.annotation) is list else None
        if field.is_required():
            default = "required"
        elif field.default is PydanticUndefined:
            default = f"default {_shown(field.get_default(call_default_factory=True))}"
        else:
            default = f"default {_shown(field.default)}"
        rows.append((dotted, _type_name(field.annotation), default, field.description or ""))
        if item is not None:
            rows += settings_fields(item, f"{dotted}.<i>.")
    return rows


def settings_help(model: type[BaseModel]) -> str:
    """The settings part of a job's `--help`: every field with its type, default and description."""
    lines = [
        "settings: in the --config file, as --set KEY=VALUE, or as the environment variable TRYALL_KEY with __",
        "between sections (TRYALL_SAMPLING__STEPS=20 is --set sampling.steps=20)",
    ]
    for dotted, type_name, default, description in settings_fields(model):
        lines.append(f"  {dotted}: {type_name} ({default})")
        if description:
            lines.append(textwrap.fill(description, 110, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)
