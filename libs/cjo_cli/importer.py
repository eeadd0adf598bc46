"""`cjo import events|profiles FILE`: rows of a CSV or NDJSON file sent to identity's
IngestEvents in batches of 1,000, a checkpoint beside the file recording the last line identity
acknowledged, so an interrupted import resumes where it stopped. Every row gets a message id
derived from its text (not the file's name or the line) when it has none, so a row sent twice
(a batch in flight when the import was killed, or a renamed copy of the file) is acknowledged
as a duplicate, never applied twice. Rejected rows are kept in the checkpoint (which stays until
none is left): the next run sends them again, so a user who fixes them in place and runs the
same command imports only those, with the ids of the file as it was first imported."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2

from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo_client import Client
from cjo_platform.rpc.client import too_large

BATCH_SIZE = 1000
# A batch's encoded events at most (a single larger row goes alone): far below the 32 MiB gRPC
# message limit however large the rows (identity takes events up to 256 KiB each).
BATCH_BYTES = 4 * 1024 * 1024
IN_FLIGHT = 2  # batches sent before the oldest is acknowledged: identity works while we parse
IDENTIFIER_TYPES = ("user_id", "anonymous_id", "email", "phone", "device_id")
SOURCE = "cjo-import"
_BATCH_INDEX = re.compile(r"^events\[\d+\]\.?")


@dataclass
class Rejected:
    line: int
    reason: str


@dataclass
class Summary:
    total: int = 0  # data rows in the file
    skipped: int = 0  # rows a previous run had imported (before the checkpoint)
    accepted: int = 0
    duplicates: int = 0  # accepted rows identity had already (sent again after a stop)
    rejected: list[Rejected] = field(default_factory=list)
    stopped: bool = False  # stopped before the end (max_batches); the checkpoint is kept

    def reasons(self) -> Counter[str]:
        return Counter(r.reason.split(":", 1)[0] for r in self.rejected)


class ImportError_(Exception):
    """The file cannot be imported at all (unreadable, unknown format, a stale checkpoint)."""


def checkpoint_path(path: Path) -> Path:
    return path.with_name(path.name + ".cjo-checkpoint")


@dataclass
class Checkpoint:
    """An import under way: what ``FILE.cjo-checkpoint`` holds."""
    line: int = 0  # rows up to this line were acknowledged (or rejected)
    run: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The file's digest when its import began: derived ids hold it, so rows a user fixes in
    # place after a rejection do not change the ids of the rows imported before.
    file: str = ""
    # What the acknowledged rows said (a sum of their line and digest hashes, so rows accepted
    # on a later run add to it): a resumed run refuses a file whose imported rows changed.
    acked: int | None = None
    rejected: dict[int, str] = field(default_factory=dict)  # line -> reason
    # Lines ever sent again (ids "line N"): never counted among identical rows, in every run.
    resent: list[int] = field(default_factory=list)


def _read_checkpoint(path: Path) -> Checkpoint | None:
    cp = checkpoint_path(path)
    if not cp.exists():
        return None
    data = json.loads(cp.read_text(encoding="utf-8"))
    if "file" not in data:  # written by an earlier cjo: only the size was recorded
        size = path.stat().st_size
        if data.get("size") != size:
            raise ImportError_(f"{path} changed since the interrupted import recorded in {cp} "
                               f"(it was {data.get('size')} bytes, it is {size}); delete the "
                               f"checkpoint to start over (a changed file is a new file: rows "
                               f"without a message_id are imported again)")
        return Checkpoint(int(data["line"]), str(data.get("run", "")), file_digest(path))
    return Checkpoint(int(data["line"]), str(data["run"]), str(data["file"]),
                      int(data["acked"], 16),
                      {int(line): str(why) for line, why in data.get("rejected", {}).items()},
                      [int(line) for line in data.get("resent", [])])


def _write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    cp = checkpoint_path(path)
    tmp = cp.with_name(cp.name + ".tmp")
    # The fields as they are (asdict deep-copied the rejected rows at every batch).
    data = {"line": checkpoint.line, "run": checkpoint.run, "file": checkpoint.file,
            "acked": f"{checkpoint.acked or 0:x}", "rejected": checkpoint.rejected,
            "resent": checkpoint.resent}
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, cp)


_MOD = 1 << 256


def _row_hash(line: int, digest: str) -> int:
    return int(hashlib.sha256(f"{line}\n{digest}".encode()).hexdigest(), 16)


def _rows(path: Path) -> Iterator[tuple[int, str, dict[str, Any] | str]]:
    """(line number, raw text, row or why it cannot be read) for each data row."""
    suffix = path.suffix.lower()
    # utf-8-sig: a byte order mark (Excel's "CSV UTF-8") is not part of the first column's name.
    with path.open(encoding="utf-8-sig", newline="") as f:
        if suffix == ".csv":
            reader = csv.DictReader(f)
            for row in reader:
                extra = row.pop(None, None)
                raw = json.dumps([row, extra], sort_keys=True) if extra else json.dumps(
                    row, sort_keys=True)
                if extra:
                    fields = f"{len(extra)} extra field" + "s" * (len(extra) > 1)
                    yield (reader.line_num, raw, f"row: {fields} (the header has "
                           f"{len(reader.fieldnames or ())} columns)")
                    continue
                yield reader.line_num, raw, {k: v for k, v in row.items() if v not in ("", None)}
            return
        if suffix not in (".ndjson", ".jsonl", ".json"):
            raise ImportError_(f"{path}: expected .csv, .ndjson or .jsonl")
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                yield number, line, f"not JSON: {exc}"
                continue
            yield number, line, row if isinstance(row, dict) else "not a JSON object"


def count_rows(path: Path) -> int:
    with path.open("rb") as f:
        lines = sum(1 for line in f if line.strip())
    return lines - 1 if path.suffix.lower() == ".csv" else lines


def row_digest(kind: str, raw: str) -> str:
    """What a row says, wherever it is in its file."""
    return hashlib.sha256(f"{kind}\n{raw.strip()}".encode()).hexdigest()


def file_digest(path: Path) -> str:
    """What the whole file says, whatever its name: a renamed copy has the same."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _message_id(digest: str, occurrence: int | str, in_file: str) -> str:
    # ``occurrence`` counts identical rows earlier in the file, so two equal rows are two
    # events (a person clicking twice in one second), each with its own id. ``in_file`` (the
    # file's content digest) keeps the same row in another file a new event (a profile
    # snapshot going back to yesterday's plan), while a renamed copy is recognised.
    return "import-" + hashlib.sha256(
        f"{digest}\n{occurrence}\n{in_file}".encode()).hexdigest()[:32]


def _split_identifiers(row: dict[str, Any]) -> tuple[list[event_pb2.Identifier], dict[str, Any]]:
    ids = [event_pb2.Identifier(type=t, value=str(row[t])) for t in IDENTIFIER_TYPES
           if row.get(t) not in (None, "")]
    rest = {k: v for k, v in row.items() if k not in IDENTIFIER_TYPES}
    return ids, rest


def event_from_row(kind: str, digest: str, occurrence: int | str, in_file: str,
                   row: dict[str, Any]) -> event_pb2.Event:
    """An NDJSON row in the Event proto's JSON form is taken as it is; otherwise (CSV, or a flat
    object) identifier columns become identifiers and the others properties (events) or traits
    (profiles). Raises ValueError naming what is wrong."""
    event = event_pb2.Event()
    if "identifiers" in row:
        json_format.ParseDict(row, event)
    else:
        ids, rest = _split_identifiers(row)
        meta = {k: rest.pop(k) for k in ("message_id", "name", "timestamp", "source", "type")
                if k in rest}
        json_format.ParseDict(meta, event)
        event.identifiers.extend(ids)
        target = event.traits if kind == "profiles" else event.properties
        if kind == "profiles":
            rest.update({k: row[k] for k in ("email", "phone") if k in row})
        target.update(rest)
    if kind == "profiles":
        event.type = event_pb2.EVENT_TYPE_IDENTIFY
    elif not event.type:
        event.type = event_pb2.EVENT_TYPE_TRACK
    if not event.message_id:
        event.message_id = _message_id(digest, occurrence, in_file)
    if not event.source:
        event.source = SOURCE
    return event


def _reason(status: Any) -> str:
    parts = [status.message]
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            # The field path is the row's, not the batch's: `events[7].name` -> `name`.
            parts = [f"{_BATCH_INDEX.sub('', v.field) or 'event'}: {v.description}"
                     for v in bad.field_violations] or parts
    return "; ".join(p for p in parts if p) or f"code {status.code}"


async def run_import(client: Client, kind: str, path: Path, *,
                     progress: Callable[[int], None] = lambda _: None,
                     max_batches: int | None = None) -> Summary:
    """Import ``path``; ``progress`` is called with the number of rows done after each batch
    (rows skipped by a resume count as done at once)."""
    if kind not in ("events", "profiles"):
        raise ImportError_(f"cannot import {kind!r}: events or profiles")
    if not path.is_file():
        raise ImportError_(f"{path}: no such file")
    summary = Summary(total=count_rows(path))
    previous = _read_checkpoint(path)
    state = dataclasses.replace(previous) if previous else Checkpoint(file=file_digest(path))
    start_after = state.line
    retry = dict(state.rejected)  # rows rejected before: sent again (fixed or not)
    resent = {*state.resent, *(line for line in retry if line <= start_after)}
    state.resent = sorted(resent)
    # Events: a row is recognised in the same file content (a renamed copy), and the same row
    # in another file is a new event. Profiles are snapshots of state: importing one again
    # applies it again (Monday's gold after Tuesday's silver is gold, even when Wednesday's
    # file is byte for byte Monday's), so their ids hold only to this run (kept by the
    # checkpoint, so a resumed run's repeated batch is still recognised). The file is the one
    # the import began with, whatever was fixed in it since.
    in_file = state.file + (f"\nrun {state.run}" if kind == "profiles" else "")
    pending: list[tuple[int, asyncio.Task[Any], list[tuple[int, str, event_pb2.Event]]]] = []
    sent_batches = 0

    def settled(line: int, digest: str, result: Any) -> None:
        if result.status.code:
            rejected(line, _reason(result.status))
            return
        state.acked = ((state.acked or 0) + _row_hash(line, digest)) % _MOD
        state.rejected.pop(line, None)  # a rejected row fixed since
        if result.duplicate:
            summary.duplicates += 1
        else:
            summary.accepted += 1

    def rejected(line: int, reason: str) -> None:
        summary.rejected.append(Rejected(line, reason))
        state.rejected[line] = reason

    async def call(rows: list[tuple[int, str, event_pb2.Event]]) -> None:
        """Send ``rows`` now; a call refused as too large is split, a row alone rejected."""
        try:
            reply = await client.identity.IngestEvents(identity_pb.IngestEventsRequest(
                events=[e for _, _, e in rows]), metadata=client.metadata)
        except grpc.aio.AioRpcError as exc:
            if not too_large(exc):  # a busy server's RESOURCE_EXHAUSTED is not the row's fault
                raise
            if len(rows) == 1:
                rejected(rows[0][0], f"row: too large ({rows[0][2].ByteSize()} bytes encoded)")
                return
            half = len(rows) // 2
            await call(rows[:half])
            await call(rows[half:])
            return
        for (line, digest, _), result in zip(rows, reply.results, strict=True):
            settled(line, digest, result)

    async def settle_oldest() -> None:
        last_line, task, rows = pending.pop(0)
        try:
            reply = await task
        except grpc.aio.AioRpcError as exc:
            if not too_large(exc):
                raise
            await call(rows)
        else:
            for (line, digest, _), result in zip(rows, reply.results, strict=True):
                settled(line, digest, result)
        # Only now is every row up to last_line acknowledged (batches settle in order).
        state.line = max(state.line, last_line)
        _write_checkpoint(path, state)
        progress(summary.skipped + summary.accepted + summary.duplicates
                 + len(summary.rejected))

    batch: list[tuple[int, str, event_pb2.Event]] = []
    batch_bytes = 0
    last = 0
    seen: Counter[str] = Counter()
    reported = False  # the rows skipped (imported before) were reported to ``progress``

    async def send() -> None:
        nonlocal batch, batch_bytes, sent_batches
        request = identity_pb.IngestEventsRequest(events=[e for _, _, e in batch])
        task = asyncio.ensure_future(client.identity.IngestEvents(request,
                                                                  metadata=client.metadata))
        pending.append((batch[-1][0], task, batch))
        batch, batch_bytes = [], 0
        sent_batches += 1
        while len(pending) >= IN_FLIGHT:
            await settle_oldest()

    async def add(item: tuple[int, str, event_pb2.Event]) -> bool:
        """Batch ``item``, sending a batch once full (1,000 rows or 4 MiB); False once
        ``max_batches`` were sent."""
        nonlocal batch_bytes
        size = item[2].ByteSize()
        if batch and batch_bytes + size > BATCH_BYTES:
            await send()
        batch.append(item)
        batch_bytes += size
        if len(batch) == BATCH_SIZE:
            if max_batches is not None and sent_batches >= max_batches:
                summary.stopped = True
                return False
            await send()
        return True

    def check() -> None:
        """Before anything is sent, in a pass of its own (rows to send again are not held in
        memory meanwhile): the rows acknowledged before are those of this file."""
        acked = 0  # the rows' hashes up to the checkpoint
        for line, raw, _ in _rows(path):
            if line > start_after:
                break
            if line not in retry:
                acked = (acked + _row_hash(line, row_digest(kind, raw))) % _MOD
        if previous is not None and previous.acked is not None and acked != previous.acked:
            raise ImportError_(
                f"{path} changed since the import recorded in {checkpoint_path(path)}, in "
                f"rows it had imported (only the rejected rows may be edited, in place); "
                f"delete the checkpoint to import it as a new file (rows without a "
                f"message_id are then imported again)")
        state.acked = acked

    try:
        if previous is not None:
            check()
        for line, raw, row in _rows(path):
            # Counted for skipped rows too, so a resumed run numbers repeats as the first did.
            digest = row_digest(kind, raw)
            if line <= start_after and line in resent:
                # Re-sent (fixed or not): an id of its own, never a row acknowledged before.
                occurrence: int | str = f"line {line}"
            else:
                occurrence = seen[digest]
                seen[digest] += 1
            if line <= start_after and line not in retry:
                summary.skipped += 1
                continue
            if not reported:
                reported = True
                if summary.skipped:
                    progress(summary.skipped)
            last = max(last, line)
            if isinstance(row, str):
                rejected(line, row)
                continue
            try:
                event = event_from_row(kind, digest, occurrence, in_file, row)
            except (ValueError, TypeError, json_format.ParseError) as exc:
                # Whatever a row holds, it is rejected alone: no row stops the import.
                rejected(line, f"row: {exc}")
                continue
            if not await add((line, digest, event)):
                break
        if batch and not summary.stopped:
            await send()
        while pending:
            await settle_oldest()
    finally:
        for _, task, _ in pending:
            task.cancel()
    summary.rejected.sort(key=lambda r: r.line)
    if not summary.stopped:
        if summary.rejected:
            # Kept: running the same command again sends the rejected rows again (once fixed,
            # with the ids of the file as it was imported), and only them.
            state.line = max(state.line, last)
            _write_checkpoint(path, state)
        else:
            if kind == "events" and state.file != file_digest(path):
                # Rows were fixed in place: their ids hold the file as it began, so the
                # checkpoint stays (nothing rejected, everything done) and a new run skips all.
                state.line = max(state.line, last)
                _write_checkpoint(path, state)
            else:
                # Done: a new run of the same file starts over, and finds every row a duplicate.
                checkpoint_path(path).unlink(missing_ok=True)
    return summary
