"""The `cjo` command line (typer + rich). Every command talks to the services of one context
(`cjo context use`), or of the environment (CJO_<SERVICE>_TARGET, CJO_API_KEY)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import grpc
import typer
import yaml
from google.protobuf import json_format
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cjo.analytics.v1 import reports_pb2
from cjo.common.v1 import common_pb2
from cjo.decisioning.v1 import decisioning_service_pb2 as decisioning_pb
from cjo.delivery.v1 import delivery_service_pb2 as delivery_pb
from cjo.delivery.v1 import message_pb2
from cjo.identity.v1 import event_pb2
from cjo.identity.v1 import identity_service_pb2 as identity_pb
from cjo_cli import apply as applying
from cjo_cli import importer, manifests
from cjo_cli.config import Config, ConfigError, Context, parse_endpoints
from cjo_cli.resources import KIND_TABLE, SETTINGS_PARTS, manifest_spec, settable, to_dict
from cjo_client import Client, describe_error

app = typer.Typer(help="cjo from the command line: apply manifests, look at objects, import "
                       "events and profiles, read reports.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
context_app = typer.Typer(help="Named endpoints + API key, like kubectl contexts.",
                          no_args_is_help=True)
profile_app = typer.Typer(help="One person's golden record.", no_args_is_help=True)
tail_app = typer.Typer(help="Follow what cjo does.", no_args_is_help=True)
app.add_typer(context_app, name="context")
app.add_typer(profile_app, name="profile")
app.add_typer(tail_app, name="tail")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")
_state: dict[str, str | None] = {"context": None}


@app.callback()
def _options(context: str = typer.Option(None, "--context", help="Use this context instead "
                                         "of the current one.")) -> None:
    _state["context"] = context


def _context() -> Context:
    return Config.load().context(_state["context"])


def _run(work: Callable[[Client], Awaitable[T]]) -> T:
    """Run ``work`` with a client of the chosen context; errors become readable lines and
    exit code 1 (2 for a configuration problem)."""
    try:
        client = _context().client()
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None

    async def go() -> T:
        async with client:
            return await work(client)

    try:
        return asyncio.run(_coro(go()))
    except grpc.RpcError as exc:
        for line in describe_error(exc):
            err.print(line, style="red", highlight=False, markup=False)
        raise typer.Exit(1) from None
    except (ConfigError, manifests.ManifestError, importer.ImportError_, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


def _coro(awaitable: Awaitable[T]) -> Coroutine[Any, Any, T]:
    async def wrap() -> T:
        return await awaitable
    return wrap()


def _emit(data: Any, output: str) -> None:
    if output == "json":
        out.print_json(json.dumps(data))
    else:
        out.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="",
                  markup=False, highlight=False)


# --- contexts -----------------------------------------------------------------------------------


@context_app.command("add")
def context_add(
        name: str,
        host: str = typer.Option(None, help="Every service on this host at its default port."),
        endpoint: list[str] = typer.Option([], help="SERVICE=HOST:PORT, repeatable."),
        api_key_env: str = typer.Option("", help="Read the key from this environment variable "
                                        "when the context is used (nothing stored)."),
        api_key_stdin: bool = typer.Option(False, help="Read the key from standard input and "
                                           "store it (the file is readable by you only)."),
        use: bool = typer.Option(True, help="Make it the current context."),
        tls: bool = typer.Option(None, "--tls/--no-tls", help="TLS to the services (default: "
                                 "on when a host is not this machine)."),
        ca_file: str = typer.Option("", help="PEM file of the CA that signed the services' "
                                    "certificates (implies --tls)."),
        insecure: bool = typer.Option(False, help="Allow plaintext to a host that is not this "
                                      "machine (the key then crosses the network in the clear)."),
) -> None:
    """Add (or replace) a context."""
    try:
        endpoints = parse_endpoints(host, endpoint)
    except ConfigError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    key = sys.stdin.readline().strip() if api_key_stdin else ""
    config = Config.load()
    if ca_file and not Path(ca_file).is_file():
        err.print(f"[red]error:[/] --ca-file {ca_file}: no such file")
        raise typer.Exit(2)
    config.contexts[name] = Context(name, endpoints, key, api_key_env, tls,
                                    str(Path(ca_file).resolve()) if ca_file else "", insecure)
    if use or not config.current:
        config.current = name
    config.save()
    out.print(f"context {name} saved" + (" and in use" if config.current == name else ""))


@context_app.command("use")
def context_use(name: str) -> None:
    """Make NAME the current context."""
    config = Config.load()
    if name not in config.contexts:
        err.print(f"[red]error:[/] no context {name!r}")
        raise typer.Exit(2)
    config.current = name
    config.save()
    out.print(f"using context {name}")


@context_app.command("list")
def context_list() -> None:
    """The contexts; the key is never shown, only where it comes from."""
    config = Config.load()
    table = Table("", "NAME", "ENDPOINTS", "KEY")
    for c in config.contexts.values():
        key = (f"${c.api_key_env}" if c.api_key_env else "stored" if c.api_key
               else "$CJO_API_KEY")
        endpoints = ", ".join(f"{s}={t}" for s, t in c.endpoints.items()) or "defaults"
        table.add_row("*" if c.name == config.current else "", c.name, endpoints, key)
    out.print(table)


# --- apply, get, list, describe ---------------------------------------------------------------


@app.command("apply")
def apply_cmd(
        file: Path = typer.Option(..., "-f", "--filename", help="A manifest file or a "
                                  "directory of them (read recursively)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Show what would change, as a "
                                     "diff against the server; change nothing."),
        recreate: bool = typer.Option(False, "--recreate", help="Create a journey again whose "
                                      "namesake was archived (else that is an error)."),
        rotate_secrets: bool = typer.Option(
            False, "--rotate-secrets", help="Send every secret the manifests set, even one the "
            "server holds (secrets are never read back, so one changed alone is otherwise not "
            "sent: apply says so).")) -> None:
    """Create or update what the manifests describe; unchanged objects are left alone. A
    paused journey is never published (that would resume it)."""
    try:
        found = manifests.load(file)
    except manifests.ManifestError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None

    def report(o: applying.Outcome) -> None:
        verb = o.action if not dry_run or o.action == "unchanged" else f"would be {o.action}"
        style = {"unchanged": "dim", "created": "green"}.get(o.action, "yellow")
        out.print(f"{o.kind}/{o.name} [{style}]{verb}[/]", highlight=False)
        if dry_run and o.diff:
            out.print(o.diff, markup=False, highlight=False, end="")
        if o.note:
            out.print(f"  {o.note}", markup=False, highlight=False)

    outcomes = _run(lambda c: applying.apply(c, found, dry_run=dry_run, recreate=recreate,
                                             rotate_secrets=rotate_secrets, report=report))
    changed = sum(o.action != "unchanged" for o in outcomes)
    if not changed:
        out.print("no changes")
    elif dry_run:
        out.print(f"{changed} of {len(outcomes)} would change (dry run: nothing changed)")
    else:
        out.print(f"{changed} of {len(outcomes)} changed")


def _kind(kind: str) -> str:
    for name in [*KIND_TABLE, "Settings"]:
        if name.lower() in (kind.lower(), kind.lower().rstrip("s")):
            return name
    err.print(f"[red]error:[/] unknown kind {kind!r}; one of "
              f"{', '.join([*KIND_TABLE, 'Settings'])}")
    raise typer.Exit(2)


_COLUMNS: dict[str, tuple[str, ...]] = {
    "Content": ("key", "display_name", "latest_version", "update_time"),
    "Snippet": ("key", "revision", "update_time"),
    "Segment": ("segment_id", "display_name", "state", "member_count"),
    "Provider": ("display_name", "provider_id", "channel", "kind", "priority", "disabled"),
    "Action": ("key", "display_name", "value", "lever"),
    "DecisionPoint": ("key", "display_name", "max_actions", "error_count"),
    "Journey": ("display_name", "journey_id", "state", "published_version", "error_count"),
}


@app.command("list")
def list_cmd(kind: str, output: str = typer.Option("table", "-o", "--output",
                                                   help="table, yaml or json")) -> None:
    """List the objects of a kind."""
    name = _kind(kind)
    if name == "Settings":
        get_cmd("settings", None, output)
        return
    items = _run(KIND_TABLE[name].list)
    if output != "table":
        _emit([to_dict(i) for i in items], output)
        return
    table = Table(*(c.upper() for c in _COLUMNS[name]))
    for item in items:
        data = to_dict(item)
        table.add_row(*(str(data.get(c, "")) for c in _COLUMNS[name]))
    out.print(table)


@app.command("get")
def get_cmd(kind: str, name: str | None = typer.Argument(None),
            output: str = typer.Option("yaml", "-o", "--output", help="yaml or json")) -> None:
    """One object as a manifest you can apply (output-only fields left out)."""
    k = _kind(kind)
    if k == "Settings":
        async def settings(c: Client) -> dict[str, Any]:
            return {s: settable(await p.get(c)) for s, p in SETTINGS_PARTS.items()}
        _emit({"kind": "Settings", "spec": _run(settings)}, output)
        return
    if not name:
        list_cmd(kind, "table" if output == "yaml" else output)
        return
    found = _run(lambda c: KIND_TABLE[k].lookup(c, name))
    if found is None:
        err.print(f"[red]error:[/] {k} {name!r} not found")
        raise typer.Exit(1)
    _emit({"kind": k, "spec": manifest_spec(KIND_TABLE[k], found)}, output)


@app.command("describe")
def describe_cmd(kind: str, name: str,
                 output: str = typer.Option("yaml", "-o", "--output")) -> None:
    """One object with every field the server holds (state, errors, times)."""
    k = _kind(kind)
    found = _run(lambda c: KIND_TABLE[k].lookup(c, name))
    if found is None:
        err.print(f"[red]error:[/] {k} {name!r} not found")
        raise typer.Exit(1)
    _emit(to_dict(found), output)


# --- import -------------------------------------------------------------------------------------


@app.command("import")
def import_cmd(
        kind: str = typer.Argument(..., help="events or profiles"),
        file: Path = typer.Argument(..., help="A .csv, .ndjson or .jsonl file"),
        progress: bool = typer.Option(None, "--progress/--no-progress",
                                      help="Show a progress bar (default: on a terminal)."),
        max_batches: int = typer.Option(None, hidden=True,
                                        help="Stop after this many batches (to test resume).")
) -> None:
    """Send rows to identity in batches of 1,000 (or 4 MiB); resumable (a checkpoint beside the
    file, kept while rows are rejected: run again once they are fixed); exits 1 when rows were
    rejected, after saying which and why."""
    show = err.is_terminal if progress is None else progress
    bar = Progress(TextColumn("[bold]importing {task.fields[file]}"), BarColumn(),
                   MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                   disable=not show)
    with bar:
        task = bar.add_task("import", total=None, file=file.name)

        def advance(done: int) -> None:
            bar.update(task, completed=done)

        async def work(c: Client) -> importer.Summary:
            if file.is_file():
                bar.update(task, total=importer.count_rows(file))
            return await importer.run_import(c, kind, file, progress=advance,
                                             max_batches=max_batches)

        summary = _run(work)
    out.print(f"{summary.accepted} accepted, {summary.duplicates} already imported, "
              f"{len(summary.rejected)} rejected, {summary.skipped} skipped (imported before) "
              f"of {summary.total} rows", highlight=False)
    if summary.stopped:
        out.print(f"stopped early; run again to resume ({importer.checkpoint_path(file)})")
    if summary.rejected:
        table = Table("LINE", "WHY", title="rejected rows")
        for r in summary.rejected[:20]:
            table.add_row(str(r.line), r.reason)
        if len(summary.rejected) > 20:
            table.caption = f"and {len(summary.rejected) - 20} more"
        err.print(table)
        raise typer.Exit(1)


# --- reports ------------------------------------------------------------------------------------


async def _journey_name(c: Client, journey: str) -> str:
    if journey.startswith("journeys/"):
        return journey
    found = await KIND_TABLE["Journey"].lookup(c, journey)
    return str(getattr(found, "name", "")) or f"journeys/{journey}"


@app.command("funnel")
def funnel_cmd(journey: str = typer.Argument(..., help="Journey id, name or display name")
               ) -> None:
    """Per-node counts of a journey, per published version."""
    async def work(c: Client) -> Any:
        return await c.analytics.GetJourneyFunnel(reports_pb2.GetJourneyFunnelRequest(
            journey=await _journey_name(c, journey)), metadata=c.metadata)
    reply = _run(work)
    for version in reply.versions:
        table = Table("NODE", "ENTERED", "IN PROGRESS", "COMPLETED", "DROPPED", "FAILED",
                      "HELD OUT", title=f"{reply.journey} version {version.journey_version}: "
                      f"{version.entered_profiles} entered, {version.converted_profiles} "
                      f"converted ({version.conversion_rate:.1%})")
        for n in version.nodes:
            table.add_row(n.node_id, *(str(v) for v in (n.entered, n.in_progress, n.completed,
                                                          n.dropped, n.failed, n.held_out)))
        out.print(table)
    if not reply.versions:
        out.print(f"{reply.journey}: nobody entered yet")


@app.command("experiment")
def experiment_cmd(experiment_id: str) -> None:
    """An experiment's arms with lifts and intervals."""
    reply = _run(lambda c: c.analytics.GetExperimentResults(
        reports_pb2.GetExperimentResultsRequest(experiment_id=experiment_id),
        metadata=c.metadata))
    table = Table("ARM", "EXPOSURES", "CONVERSIONS", "RATE", "LIFT", "95% INTERVAL", "P",
                  title=f"experiment {reply.experiment_id} (control {reply.control_arm})")
    for a in reply.arms:
        table.add_row(a.arm + (" (control)" if a.control else ""), str(a.exposures),
                      str(a.conversions), f"{a.conversion_rate:.2%}",
                      "" if a.control else f"{a.absolute_lift:+.2%}",
                      "" if a.control else f"[{a.absolute_lift_ci.lower:+.2%}, "
                      f"{a.absolute_lift_ci.upper:+.2%}]",
                      "" if a.control else f"{a.p_value:.3f}")
    out.print(table)
    if reply.sample_ratio.warning:
        err.print(f"[yellow]{reply.sample_ratio.warning}[/]")


@app.command("attribution")
def attribution_cmd(days: int = typer.Option(30, help="Conversions of this many days, up to "
                                             "now."),
                    lookback_days: int = typer.Option(30, help="Touchpoints this many days "
                                                      "before a conversion count.")) -> None:
    """Conversions credited to channels under each attribution model."""
    models = [m for m in reports_pb2.AttributionModel.values() if m]
    window = reports_pb2.TimeWindow()
    window.end_time.GetCurrentTime()
    window.start_time.FromSeconds(window.end_time.seconds - days * 86400)
    reply = _run(lambda c: c.analytics.GetAttribution(reports_pb2.GetAttributionRequest(
        window=window, lookback_days=lookback_days, models=models), metadata=c.metadata))
    out.print(f"{reply.conversions} conversions, {reply.attributed_conversions} attributed "
              f"(revenue {reply.attributed_revenue:.2f})")
    table = Table("MODEL", "CHANNEL", "CONVERSIONS", "REVENUE")
    for m in reply.models:
        model = reports_pb2.AttributionModel.Name(m.model).removeprefix("ATTRIBUTION_MODEL_")
        for credit in m.channels:
            table.add_row(model, _channel(credit.channel), f"{credit.conversions:.2f}",
                          f"{credit.revenue:.2f}")
        if not m.channels:
            table.add_row(model, "-", "0", "0")
    out.print(table)


def _channel(value: int) -> str:
    return str(common_pb2.Channel.Name(value)).removeprefix("CHANNEL_").lower()


# --- profiles -----------------------------------------------------------------------------------


async def _profile_name(c: Client, who: str) -> str:
    """A profile id, `profiles/…`, or TYPE:VALUE of one of its identifiers."""
    if who.startswith("profiles/"):
        return who
    kind, sep, value = who.partition(":")
    if sep and kind in importer.IDENTIFIER_TYPES:
        reply = await c.identity.LookupProfile(identity_pb.LookupProfileRequest(
            identifier=event_pb2.Identifier(type=kind, value=value)), metadata=c.metadata)
        return str(reply.profile.name)
    return f"profiles/{who}"


@profile_app.command("show")
def profile_show(who: str = typer.Argument(..., help="profile id or TYPE:VALUE"),
                 output: str = typer.Option("table", "-o", "--output")) -> None:
    """Traits, identifiers, consent and segments of a person."""
    async def work(c: Client) -> Any:
        return (await c.identity.GetProfile(identity_pb.GetProfileRequest(
            name=await _profile_name(c, who)), metadata=c.metadata)).profile
    profile = _run(work)
    if output != "table":
        _emit(to_dict(profile), output)
        return
    out.print(f"[bold]{profile.name}[/]", highlight=False)
    ids = Table("IDENTIFIER", "VALUE")
    for i in profile.identifiers:
        ids.add_row(i.type, i.value)
    out.print(ids)
    traits = Table("TRAIT", "VALUE")
    for key, value in sorted(to_dict(profile).get("traits", {}).items()):
        traits.add_row(key, json.dumps(value))
    out.print(traits)
    if profile.segments:
        out.print("segments: " + ", ".join(profile.segments))


@profile_app.command("export")
def profile_export(who: str) -> None:
    """Everything cjo holds about a person, as JSON (a data subject access request): identity's
    profile and events, and decisioning's decisions and learned send time."""
    async def work(c: Client) -> tuple[dict[str, Any], str]:
        name = await _profile_name(c, who)
        for attempt in range(EXPORT_ATTEMPTS):
            try:
                document = await _identity_export(c, name)
                break
            except grpc.aio.AioRpcError as exc:
                # ABORTED: the profile was merged between two pages; start again.
                if exc.code() != grpc.StatusCode.ABORTED or attempt == EXPORT_ATTEMPTS - 1:
                    raise
        profile_id = str(document["profile"]["name"]).removeprefix("profiles/")
        try:
            document["decisioning"] = await _decisioning_export(c, profile_id)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
                raise
            # Not deployed (or down): the rest is still the person's; the gap is said.
            problem = f"{exc.code().name}: {exc.details() or ''}".rstrip(": ")
            document["decisioning"] = {"error": problem}
            return document, problem
        return document, ""

    document, problem = _run(work)
    out.print(json.dumps(document, sort_keys=True, indent=2), markup=False, highlight=False)
    if problem:
        err.print(f"error: decisioning could not be read ({problem}): the export lacks what it "
                  "holds", style="red", highlight=False, markup=False)
        raise typer.Exit(1)


# Times `cjo profile export` starts identity's export again when the profile changed
# (was merged) between two of its pages.
EXPORT_ATTEMPTS = 5


async def _identity_export(c: Client, name: str) -> dict[str, Any]:
    """Every page of identity's export: the profile is on the first, the events (newest
    first) on them all."""
    request = identity_pb.ExportProfileRequest(name=name)
    document: dict[str, Any] = {}
    while True:
        exported = await c.identity.ExportProfile(request, metadata=c.metadata)
        page: dict[str, Any] = json.loads(exported.json)
        document.setdefault("events", []).extend(page.pop("events", []))
        document.update(page)
        if not exported.next_page_token:
            return document
        request.page_token = exported.next_page_token


async def _decisioning_export(c: Client, profile_id: str) -> dict[str, Any]:
    """Every decision decisioning logged for the person (and the ids merged into them), and
    the send time it learned from their opens and clicks."""
    decisions: list[dict[str, Any]] = []
    token = ""
    while True:
        page = await c.decisioning.ListDecisions(decisioning_pb.ListDecisionsRequest(
            profile_id=profile_id, page_size=1000, page_token=token), metadata=c.metadata)
        decisions += [json_format.MessageToDict(d) for d in page.decisions]
        token = page.next_page_token
        if not token:
            break
    times = await c.decisioning.GetSendTimes(decisioning_pb.GetSendTimesRequest(
        profile_ids=[profile_id]), metadata=c.metadata)
    return {"decisions": decisions,
            "sendTimes": [json_format.MessageToDict(t) for t in times.send_times]}


@profile_app.command("erase")
def profile_erase(who: str, yes: bool = typer.Option(False, "--yes", help="Do not ask."),
                  block_identifiers: bool = typer.Option(
                      False, help="Refuse future events with this person's identifiers.")
                  ) -> None:
    """Erase a person (right to be forgotten); delivery forgets them too."""
    if not yes and not typer.confirm(f"erase {who}? this cannot be undone"):
        raise typer.Exit(1)

    async def work(c: Client) -> str:
        name = await _profile_name(c, who)
        await c.identity.DeleteProfile(identity_pb.DeleteProfileRequest(
            name=name, block_identifiers=block_identifiers,
            request_id=f"cjo-erase-{name}"), metadata=c.metadata)
        return name
    out.print(f"{_run(work)} erased")


# --- tail ---------------------------------------------------------------------------------------


@tail_app.command("messages")
def tail_messages(profile: str = typer.Option("", help="Only this profile's messages."),
                  journey: str = typer.Option("", help="Only this journey's messages."),
                  interval: float = typer.Option(1.0, help="Seconds between polls."),
                  count: int = typer.Option(0, help="Stop after printing this many (0: never).")
                  ) -> None:
    """Print messages as delivery records them (and again when their status changes)."""
    async def work(c: Client) -> None:
        seen: dict[str, int] = {}
        printed = 0
        while True:
            reply = await c.delivery.ListMessages(delivery_pb.ListMessagesRequest(
                profile_id=profile.removeprefix("profiles/"),
                journey_id=journey.removeprefix("journeys/"), page_size=100),
                metadata=c.metadata)
            for m in reversed(reply.messages):  # newest first on the wire: print oldest first
                if seen.get(m.name) == m.status:
                    continue
                seen[m.name] = m.status
                out.print(f"{m.create_time.ToJsonString()}  {m.name}  "
                          f"{message_pb2.MessageStatus.Name(m.status).removeprefix('MESSAGE_STATUS_')}"
                          f"  {m.recipient.address}  {m.error}".rstrip(), highlight=False,
                          markup=False)
                printed += 1
                if count and printed >= count:
                    return
            await asyncio.sleep(interval)
    with contextlib.suppress(KeyboardInterrupt):
        _run(work)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
