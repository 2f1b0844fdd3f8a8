"""``fogctl job submit --spec FILE``: a job's spec kept in a file (YAML or JSON), the flags on top.

The file holds the body of ``POST /v1/jobs`` (what ``fogctl job get ID --json`` shows as ``spec``), so a job
that worked can be kept, edited and submitted again. A flag given with it wins over the file: single values
replace the file's, ``--env``/``--label``/``--file`` add to (or replace) its keys, ``--affinity``,
``--output``, ``--after`` and ``--after-any`` add to its lists, and a command after ``--`` replaces its ``command``.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic import BaseModel

from fog_client import JobSpec

#: the option a problem with the file is reported under
OPTION = "--spec"


def load(given: str) -> dict[str, Any]:
    """The spec in the file (``-``: standard input), its keys checked against the API's: a misspelt key would
    otherwise be dropped without a word and the job run without it."""
    try:
        text = sys.stdin.read() if given == "-" else Path(given).read_text()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {given!r}: {exc.strerror}", param_hint=OPTION) from None
    try:
        spec = yaml.safe_load(text)  # YAML holds JSON too
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"{given!r} is neither YAML nor JSON: {exc}", param_hint=OPTION) from None
    if not isinstance(spec, dict):
        raise typer.BadParameter(f"{given!r} holds no mapping of a job's fields", param_hint=OPTION)
    unknown = unknown_keys(JobSpec, spec)
    if unknown:
        raise typer.BadParameter(f"{given!r}: unknown field(s) {', '.join(unknown)}", param_hint=OPTION)
    return spec


def unknown_keys(model: type[BaseModel], data: dict[str, Any], where: str = "") -> list[str]:
    """The keys of ``data`` (and of its nested models, lists of them included) that ``model`` has no field for."""
    found = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            found.append(f"{where}{key}")
            continue
        nested = _model_in(field.annotation)
        if nested is not None and isinstance(value, dict):
            found += unknown_keys(nested, value, f"{where}{key}.")
        elif nested is not None and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    found += unknown_keys(nested, item, f"{where}{key}[{index}].")
    return found


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation names, alone or as ``list[...]`` / ``... | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for argument in typing.get_args(annotation):
            model = _model_in(argument)
            if model is not None:
                return model
    return None


def as_yaml(spec: JobSpec) -> str:
    """A job's spec as a file to keep: the fields in the API's order, empty and null ones left out."""
    kept = {key: value for key, value in spec.model_dump(mode="json").items() if value not in (None, {}, [])}
    if kept.get("constraints"):
        kept["constraints"] = {key: value for key, value in kept["constraints"].items() if value not in (None, {})}
        if not kept["constraints"]:
            del kept["constraints"]
    text: str = yaml.safe_dump(kept, sort_keys=False, allow_unicode=True)
    return text


def merged(base: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """``flags`` (the spec the command line makes, holding only what was given) over the file's ``base``."""
    spec = dict(base)
    for key, value in flags.items():
        if key in ("env", "files", "resources"):  # mappings: the flags' keys over the file's
            spec[key] = {**(base.get(key) or {}), **value}
        elif key == "constraints":
            constraints = {**(base.get(key) or {}), **{k: v for k, v in value.items() if k != "labels"}}
            constraints["labels"] = {**((base.get(key) or {}).get("labels") or {}), **value.get("labels", {})}
            spec[key] = constraints
        elif key in ("affinities", "outputs", "after", "after_any"):
            spec[key] = [*(base.get(key) or []), *(item for item in value if item not in (base.get(key) or []))]
        else:
            spec[key] = value
    return spec
