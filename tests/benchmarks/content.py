"""Content benchmark: render a realistic order-shipped email for many profiles through
BatchRenderContent (1,000 renders per call) against an in-process content server.

    .venv/bin/python tests/benchmarks/content.py [--profiles 100000] [--in-flight 1] [--batch 1000]
                                                 [--backend sqlite|postgresql] [--profile-cpu]
                                                 [--baseline]

The email loops over 1-6 line items with filters, includes a footer snippet, formats money,
numbers and dates in the person's locale (en-US, de-DE, ko-KR, fr-FR; German and Korean bodies
exist, French falls back to English), and derives the plain-text part from the rendered HTML.
Prints renders/s and the p50/p99 latency of one 1,000-render batch. ``--profile-cpu`` runs the
server's render loop under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from cjo.common.v1 import common_pb2
from cjo.content.v1 import content_item_pb2 as item_pb
from cjo.content.v1 import content_service_pb2 as pb
from cjo.content.v1 import content_service_pb2_grpc as pb_grpc
from cjo_content.bootstrap import build
from cjo_platform.config import Env
from cjo_platform.logging import configure_logging
from support import as_service, drop_schemas, new_backend, serving, settings_for

BATCH = 1000
WS = as_service("bench")
LOCALES = ("en-US", "de-DE", "ko-KR", "fr-FR")
PRODUCTS = ("Trail shoe", "Rain jacket", "Wool socks", "Water bottle", "Headlamp", "Backpack 30L",
            "Camp mug", "Merino tee")

HTML = """<!DOCTYPE html>
<html><head><style>td { padding: 4px }</style></head>
<body>
<h1>{{ greeting }}, {{ profile.first_name | default: "there" | capitalize }}!</h1>
<p>Your order <b>#{{ event.order_id }}</b> from {{ event.ordered_at | local_date: "long" }}
is on its way{% if profile.vip %} with free express shipping{% endif %}.</p>
<table>
  <tr><th>Item</th><th>Qty</th><th>Price</th></tr>
  {% for line in event.items %}
  <tr>
    <td><a href="https://shop.example/p/{{ line.sku | url_encode }}">{{ line.name }}</a></td>
    <td>{{ line.quantity }}</td>
    <td>{{ line.price | times: line.quantity | money: event.currency }}</td>
  </tr>
  {% endfor %}
</table>
<p>{{ items_label }}: {{ event.items | size | number }} &middot;
Total: <b>{{ event.total | money: event.currency }}</b></p>
<p><a href="https://shop.example/orders/{{ event.order_id }}?utm_source=email">{{ track }}</a></p>
{% render 'footer', name: profile.first_name %}
</body></html>"""

FOOTER = """<hr><p style="color:#888">Acme Outdoor &middot; 1 Main St &middot;
<a href="https://shop.example/unsubscribe?u={{ name | url_encode }}">Unsubscribe</a></p>"""


def localized(greeting: str, items: str, track: str) -> str:
    return (HTML.replace("{{ greeting }}", greeting).replace("{{ items_label }}", items)
            .replace("{{ track }}", track))


def email(subject: str, greeting: str, items: str, track: str) -> item_pb.EmailTemplate:
    return item_pb.EmailTemplate(
        subject=subject, preheader="{{ event.items | size }} items · {{ event.total | money: "
                                   "event.currency }}",
        html=localized(greeting, items, track))


ITEM = item_pb.ContentItem(
    key="order-shipped", display_name="Order shipped", tags=["orders"],
    email=email("{{ profile.first_name | default: 'Hi' }}, order #{{ event.order_id }} shipped",
                "Hello", "Items", "Track your parcel"),
    localizations=[
        item_pb.Localization(locale="de", email=email(
            "{{ profile.first_name | default: 'Hallo' }}, Bestellung #{{ event.order_id }} "
            "ist unterwegs", "Hallo", "Artikel", "Sendung verfolgen")),
        item_pb.Localization(locale="ko", email=email(
            "{{ profile.first_name | default: '고객' }}님, 주문 #{{ event.order_id }} 발송 완료",
            "안녕하세요", "상품", "배송 조회")),
    ])


def render_request(rng: random.Random, n: int) -> pb.RenderContentRequest:
    request = pb.RenderContentRequest(name="contentItems/order-shipped",
                                      channel=common_pb2.CHANNEL_EMAIL)
    context = request.context
    context.profile_id = f"p{n}"
    context.traits.update({"first_name": rng.choice(("ada", "grace", "linus", "민수", "jürgen")),
                           "locale": rng.choice(LOCALES), "vip": rng.random() < 0.2,
                           "email": f"user{n}@example.com"})
    lines: list[dict[str, Any]] = [
        {"sku": f"SKU-{rng.randrange(10_000)}", "name": rng.choice(PRODUCTS),
         "quantity": rng.randint(1, 3), "price": round(rng.uniform(5, 200), 2)}
        for _ in range(rng.randint(1, 6))]
    context.event.update({
        "order_id": str(100_000 + n), "currency": rng.choice(("USD", "EUR", "KRW")),
        "ordered_at": "2026-03-01T10:00:00Z", "items": lines,
        "total": round(sum(line["price"] * line["quantity"] for line in lines), 2)})
    return request


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(stub: pb_grpc.ContentServiceStub, profiles: int, in_flight: int,
              batch_size: int = BATCH) -> None:
    await stub.CreateSnippet(pb.CreateSnippetRequest(
        snippet=item_pb.Snippet(key="footer", source=FOOTER)), metadata=WS)
    await stub.CreateContentItem(pb.CreateContentItemRequest(content_item=ITEM), metadata=WS)
    await stub.PublishContentItem(pb.PublishContentItemRequest(
        name="contentItems/order-shipped"), metadata=WS)

    rng = random.Random(1)
    # Requests are built before timing: the figures are the server's, plus gRPC transport.
    batches = [pb.BatchRenderContentRequest(
        requests=[render_request(rng, start + i)
                  for i in range(min(batch_size, profiles - start))])
        for start in range(0, profiles, batch_size)]
    first = await stub.BatchRenderContent(batches[0], metadata=WS)
    sample = first.results[0]
    assert sample.status.code == 0, sample.status
    print(f"sample ({sample.message.locale}): {sample.message.email.subject!r}, "
          f"{len(sample.message.email.html):,} HTML chars, "
          f"{len(sample.message.email.text):,} text chars", flush=True)

    latencies: list[float] = []
    failed = 0
    queue = list(batches)

    async def worker() -> None:
        nonlocal failed
        while queue:
            batch = queue.pop()
            started = time.perf_counter()
            reply = await stub.BatchRenderContent(batch, metadata=WS)
            latencies.append(time.perf_counter() - started)
            failed += sum(1 for r in reply.results if r.status.code)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"{profiles:,} renders in {elapsed:.1f} s: {profiles / elapsed:,.0f} renders/s; "
          f"{batch_size:,}-render batch p50 {statistics.median(latencies) * 1000:.0f} ms, "
          f"p99 {percentile(latencies, .99) * 1000:.0f} ms; {failed} failed", flush=True)
    # Wall time suffers when other work shares the cores; CPU time per render (server and this
    # client together: one process) is the figure to compare runs on a busy machine.
    print(f"CPU {cpu:.1f} s: {cpu / profiles * 1000:.2f} ms per render, "
          f"{profiles / cpu:,.0f} renders per CPU-second", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--in-flight", type=int, default=1)
    parser.add_argument("--batch", type=int, default=BATCH,
                        help="renders per call (1: what a journey step sends at a steady rate)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--profile-cpu", action="store_true")
    parser.add_argument("--baseline", action="store_true",
                        help="format money, numbers and dates with a Babel call per value (the "
                             "path before compiled formatters), for before/after figures")
    args = parser.parse_args()
    configure_logging("bench", fmt="console", level="warning")
    if args.baseline:
        _babel_per_value()
    profiler = cProfile.Profile() if args.profile_cpu else None
    with tempfile.TemporaryDirectory() as tmp:
        backend = new_backend(args.backend, Path(tmp))
        app = build(settings_for("content", backend), Env({}))
        try:
            async with serving(app) as address, grpc.aio.insecure_channel(
                    address, options=[("grpc.max_receive_message_length", 256 << 20)]) as channel:
                print(f"content benchmark on {args.backend}, {args.in_flight} batch(es) in "
                      "flight", flush=True)
                if profiler is not None:
                    _profile_render_threads(profiler)
                await run(pb_grpc.ContentServiceStub(channel), args.profiles, args.in_flight,
                          args.batch)
        finally:
            drop_schemas(backend)
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def _babel_per_value() -> None:
    from babel import dates, numbers

    from cjo_content.domain import locales

    def money(tag: str, currency: str) -> object:
        return lambda value: numbers.format_currency(value, currency,
                                                     locale=locales._babel_locale(tag))

    def number(tag: str) -> object:
        return lambda value: numbers.format_decimal(value, locale=locales._babel_locale(tag))

    def date(value: object, style: str, tag: str) -> str:
        return str(dates.format_date(locales.datetime.fromisoformat(str(value).replace(
            "Z", "+00:00")), format=style, locale=locales._babel_locale(tag)))

    locales._money_formatter = money
    locales._number_formatter = number
    locales._format_date = date


def _profile_render_threads(profiler: cProfile.Profile) -> None:
    """Profile the render loop, which runs in worker threads (cProfile sees one thread)."""
    from cjo_content.service_layer import rendering

    original = rendering._render

    def profiled(*args: object, **kwargs: object) -> object:
        profiler.enable()
        try:
            return original(*args, **kwargs)
        finally:
            profiler.disable()

    rendering._render = profiled  # type: ignore[assignment]


if __name__ == "__main__":
    asyncio.run(main())
