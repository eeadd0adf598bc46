"""Journeys as files: a YAML or JSON form that maps one to one onto cjo.orchestration.v1.Journey
(protobuf's JSON mapping, field names as in the proto), so journeys can live in a repository.

    python -m cjo_orchestration.journeyfile validate journey.yaml
    python -m cjo_orchestration.journeyfile apply journey.yaml [--publish]
    python -m cjo_orchestration.journeyfile export journeys/{journey_id}

`validate` checks the file offline, with the same rules PublishJourney applies (except whether
the content exists, which only content knows). `apply` creates the journey, or, when the file
names a `journey_id`, updates that journey's draft where the file differs from it (the server's
defaults, e.g. an unset failure policy, are no difference); `--publish` then publishes the draft
when it differs from the latest published version (or was never published), so a publish that
failed or was left out is made by the next `apply --publish`. A paused journey is not published
(publishing would resume it), nor an archived one. The server is CJO_ORCHESTRATION_TARGET (default
127.0.0.1:50053), the key CJO_API_KEY.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, json_format

from cjo.orchestration.v1 import journey_pb2
from cjo.orchestration.v1 import orchestration_service_pb2 as pb
from cjo_cli.resources import OUTPUT_ONLY as SERVER_SET
from cjo_cli.resources import (
    journey_paused,
    journey_unpublished,
    request_id,
    stored_etag,
)
from cjo_orchestration.adapters import stubs
from cjo_orchestration.api.convert import graph_from_proto
from cjo_orchestration.domain.graph import validate_for_publish
from cjo_orchestration.domain.journeys import TRIGGER_FIELDS, UPDATABLE_FIELDS, JourneyGraph
from cjo_platform.errors import FieldViolation, InvalidArgument

# Set by the server; a file may carry them (e.g. after `export`) but they are not applied. The
# list `cjo apply` uses, but for `journey_id`: in a file it names the journey to update.
OUTPUT_ONLY = tuple(f.name for f in journey_pb2.Journey.DESCRIPTOR.fields
                    if f.name in SERVER_SET and f.name != "journey_id")


class JourneyFileError(ValueError):
    """The file is not a journey: unreadable, not YAML/JSON, or not the proto's shape."""


def _yaml() -> Any:
    try:
        return importlib.import_module("yaml")
    except ImportError:
        raise JourneyFileError("reading YAML needs PyYAML (pip install PyYAML); JSON files "
                               "work without it") from None


def parse(text: str, *, suffix: str = ".yaml") -> journey_pb2.Journey:
    """The journey a YAML (or JSON: ``suffix`` ".json") text describes. Unknown fields are an
    error, so a typo never silently drops part of a journey."""
    try:
        data = json.loads(text) if suffix == ".json" else _yaml().safe_load(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError's subclasses
        raise JourneyFileError(f"not valid {suffix.lstrip('.').upper()}: {exc}") from None
    except Exception as exc:  # yaml.YAMLError is not a ValueError
        raise JourneyFileError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise JourneyFileError("the file must hold one journey (a mapping)")
    try:
        journey: journey_pb2.Journey = json_format.ParseDict(data, journey_pb2.Journey())
        return journey
    except json_format.ParseError as exc:
        raise JourneyFileError(str(exc)) from None


def load(path: Path) -> journey_pb2.Journey:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise JourneyFileError(f"cannot read {path}: {exc.strerror}") from None
    return parse(text, suffix=".json" if path.suffix == ".json" else ".yaml")


def to_dict(journey: journey_pb2.Journey, *, with_output: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(journey,
                                                     preserving_proto_field_name=True)
    if not with_output:
        for name in OUTPUT_ONLY:
            data.pop(name, None)
    return data


def dump(journey: journey_pb2.Journey, *, as_json: bool = False) -> str:
    data = to_dict(journey)
    if as_json:
        return json.dumps(data, indent=2) + "\n"
    text: str = _yaml().safe_dump(data, sort_keys=False, allow_unicode=True)
    return text


def problems(journey: journey_pb2.Journey) -> list[FieldViolation]:
    """What PublishJourney would refuse, without asking content about content keys."""
    try:
        graph = graph_from_proto(journey)
    except InvalidArgument as exc:  # a value no graph holds (an unknown channel number)
        return [FieldViolation(v.field.removeprefix("journey."), v.description)
                for v in exc.violations]
    return validate_for_publish(journey.display_name, graph).items


# --- the command line ------------------------------------------------------------------------


def _metadata() -> tuple[tuple[str, str], ...]:
    key = os.environ.get("CJO_API_KEY", "")
    return (("authorization", f"Bearer {key}"),) if key else ()


def _settable(journey: journey_pb2.Journey) -> journey_pb2.Journey:
    """``journey`` without the fields the server sets."""
    body = journey_pb2.Journey()
    body.CopyFrom(journey)
    for name in OUTPUT_ONLY:
        body.ClearField(name)
    return body


def _say(text: str) -> None:
    print(text, file=sys.stderr)


async def _apply(journey: journey_pb2.Journey, publish: bool) -> journey_pb2.Journey:
    target = os.environ.get("CJO_ORCHESTRATION_TARGET", "127.0.0.1:50053")
    digest = hashlib.sha256(journey.SerializeToString(deterministic=True)).hexdigest()[:32]
    async with grpc.aio.insecure_channel(target) as channel:
        stub = stubs.orchestration(channel)
        body = _settable(journey)
        changed = True
        if journey.journey_id:
            name = f"journeys/{journey.journey_id}"
            stored: journey_pb2.Journey = (await stub.GetJourney(
                pb.GetJourneyRequest(name=name), metadata=_metadata())).journey
            # As `cjo apply`: the same file against the same stored journey is one change (a
            # retry applies it once); once the journey changed (its etag), the file is a new
            # change, so applying an earlier file again (a revert) applies it.
            rid = request_id("journeyfile", name, digest, stored_etag(stored))
            # Compared as the server stores them (its own conversion): a default it fills in
            # for a field the file leaves unset, or a value it does not keep (a zero cooldown),
            # is no difference.
            try:
                draft: JourneyGraph | None = graph_from_proto(body)
            except InvalidArgument:  # sent as it is: the server refuses it, naming the field
                draft = None
            changed = (body.display_name != stored.display_name
                       or draft != graph_from_proto(stored))
            if changed:
                body.name = name
                # Someone else's edit since the read is refused (ABORTED), not overwritten.
                body.etag = stored.etag
                # One trigger field: the one the file sets (the others are cleared with it).
                paths = [f for f in UPDATABLE_FIELDS
                         if f not in TRIGGER_FIELDS or body.WhichOneof("trigger") == f]
                stored = (await stub.UpdateJourney(pb.UpdateJourneyRequest(
                    journey=body, update_mask=field_mask_pb2.FieldMask(paths=paths),
                    request_id=rid), metadata=_metadata())).journey
        else:
            # The same file applied twice makes one journey (the id earlier releases sent too,
            # so a file applied before an upgrade does not make a second one after it).
            rid = f"file-{digest}"
            stored = (await stub.CreateJourney(pb.CreateJourneyRequest(
                journey=body, request_id=rid), metadata=_metadata())).journey
        if not publish or not (changed or journey_unpublished(stored)):
            return stored
        if journey_paused(stored):
            _say(f"{stored.name} is paused: its draft is not published (publishing would "
                 "resume it); resume it, then apply --publish again")
        elif stored.state == journey_pb2.JOURNEY_STATE_ARCHIVED:
            _say(f"{stored.name} is archived: it is not published (an archived journey cannot "
                 "be)")
        else:
            try:
                stored = (await stub.PublishJourney(pb.PublishJourneyRequest(
                    name=stored.name, request_id=f"{rid}-publish"),
                    metadata=_metadata())).journey
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.ABORTED:
                    raise
                raise PublishAborted(exc.details() or "", changed) from exc
        return stored


class PublishAborted(Exception):
    """PublishJourney answered ABORTED (the journey changed while it was being published)."""

    def __init__(self, details: str, updated: bool) -> None:
        super().__init__(details)
        self.updated = updated  # this apply wrote the draft before publishing


async def _export(name: str) -> journey_pb2.Journey:
    target = os.environ.get("CJO_ORCHESTRATION_TARGET", "127.0.0.1:50053")
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await stubs.orchestration(channel).GetJourney(
            pb.GetJourneyRequest(name=name), metadata=_metadata())
        exported: journey_pb2.Journey = reply.journey
        return exported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cjo_orchestration.journeyfile",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check a journey file offline")
    check.add_argument("file", type=Path)
    apply = commands.add_parser("apply", help="create or update the journey of a file")
    apply.add_argument("file", type=Path)
    apply.add_argument("--publish", action="store_true", help="publish it afterwards")
    export = commands.add_parser("export", help="print a journey as YAML")
    export.add_argument("name", help="journeys/{journey_id}")
    export.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            print(dump(asyncio.run(_export(args.name)), as_json=args.json), end="")
            return 0
        journey = load(args.file)
        found = problems(journey)
        for violation in found:
            print(f"{args.file}: {violation.field}: {violation.description}", file=sys.stderr)
        if args.command == "validate":
            if not found:
                print(f"{args.file}: ok")
            return 1 if found else 0
        stored = asyncio.run(_apply(journey, args.publish))
        print(f"{stored.name} {journey_pb2.JourneyState.Name(stored.state)} "
              f"version {stored.published_version}")
        return 0
    except JourneyFileError as exc:
        print(f"{getattr(args, 'file', args.command)}: {exc}", file=sys.stderr)
        return 2
    except PublishAborted as exc:
        print(f"ABORTED: {exc}", file=sys.stderr)
        print(f"{args.file}: " + ("the draft was updated but " if exc.updated else "")
              + "the journey changed while it was being published, so it was not published; "
              "run the command again", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
        if exc.code() == grpc.StatusCode.ABORTED:
            print(f"{getattr(args, 'file', args.command)}: the journey changed while this ran "
                  "(nothing was overwritten); run the command again", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
