"""JSON Schemas of every event, and the compatibility rule that guards them.

``make contracts`` writes one schema per event type into ``contracts/schemas/``. The contract test
compares the catalogue with those committed schemas: within a version only additive, optional
changes are allowed. A removed type, a removed property, a changed property schema or a new
required property is a break, and needs a new version (``v2``) instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fog_shared.events import CATALOGUE, Event

Schema = dict[str, Any]


def schema_of(event_cls: type[Event]) -> Schema:
    schema = event_cls.model_json_schema()
    schema["$id"] = f"urn:fog:event:{event_cls.TYPE.name}"
    schema["x-fog-subject"] = event_cls.TYPE.subject
    schema["x-fog-aggregate-id"] = event_cls.AGGREGATE_ID
    return schema


def current_schemas() -> dict[str, Schema]:
    return {cls.TYPE.name: schema_of(cls) for cls in CATALOGUE.types()}


def write_schemas(directory: Path) -> list[Path]:
    """Write every event schema; never deletes a committed one (types are never removed)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in current_schemas().items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def read_schemas(directory: Path) -> dict[str, Schema]:
    return {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def breaking_changes(committed: Schema, current: Schema) -> list[str]:
    """What makes ``current`` unable to read events that ``committed`` describes, or vice versa."""
    problems = []
    old_props: Schema = committed.get("properties", {})
    new_props: Schema = current.get("properties", {})
    for name, old in old_props.items():
        if name not in new_props:
            problems.append(f"property {name!r} removed")
        elif _normalised(old) != _normalised(new_props[name]):
            problems.append(f"property {name!r} changed from {old} to {new_props[name]}")
    old_required = set(committed.get("required", []))
    for name in sorted(set(current.get("required", [])) - old_required):
        problems.append(f"property {name!r} is newly required")
    if committed.get("$defs") != current.get("$defs"):
        problems.append("nested definitions ($defs) changed")
    return problems


def _normalised(prop: Schema) -> Schema:
    # Titles and descriptions are documentation, not shape.
    return {k: v for k, v in prop.items() if k not in ("title", "description", "examples")}


def check_compatibility(committed: dict[str, Schema], current: dict[str, Schema]) -> dict[str, list[str]]:
    """Per event type, the breaking changes; an empty dict means compatible."""
    report: dict[str, list[str]] = {}
    for name, old in committed.items():
        if name not in current:
            report[name] = ["event type removed (publish a new version beside it instead)"]
            continue
        problems = breaking_changes(old, current[name])
        if problems:
            report[name] = problems
    return report


def stale_schemas(directory: Path) -> list[str]:
    """Event types whose committed schema differs from the code (``make contracts`` not run)."""
    committed = read_schemas(directory)
    return [name for name, schema in current_schemas().items() if committed.get(name) != schema]


def main(argv: list[str] | None = None) -> None:
    """``python -m fog_shared.contracts [--check] [DIR]``: check, then regenerate, the schemas."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m fog_shared.contracts")
    parser.add_argument("directory", nargs="?", default="contracts/schemas", type=Path)
    parser.add_argument("--check", action="store_true", help="only check; fail if stale or incompatible")
    args = parser.parse_args(argv)
    report = check_compatibility(read_schemas(args.directory), current_schemas())
    for name, problems in report.items():
        print(f"{name}: " + "; ".join(problems), file=sys.stderr)
    if report:
        sys.exit("incompatible event change within a version: declare a new version instead")
    if args.check:
        stale = stale_schemas(args.directory)
        if stale:
            sys.exit(f"event schemas out of date, run `make contracts`: {', '.join(stale)}")
        return
    for path in write_schemas(args.directory):
        print(path)


if __name__ == "__main__":
    main()
