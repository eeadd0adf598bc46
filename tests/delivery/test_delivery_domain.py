"""Delivery's pure parts: validation, retry policy, transitions, SMTP error classes, MIME."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import random
import smtplib
from datetime import UTC, datetime, timedelta

import pytest

from cjo_delivery.adapters.smtp import build_email, classify, with_preheader
from cjo_delivery.bootstrap import load_smtp_settings
from cjo_delivery.domain.addresses import (
    canonical_email,
    is_plausible_email,
    parse_email,
    parse_mailbox,
)
from cjo_delivery.domain.messages import (
    Channel,
    EmailContent,
    MessageStatus,
    message_id_of,
    validate_send,
)
from cjo_delivery.domain.providers import ProviderKind, validate_provider
from cjo_delivery.domain.sending import (
    OutgoingEmail,
    ProviderError,
    after_failure,
    after_success,
    released,
)
from cjo_delivery.service_layer.send_round import MESSAGE_RETRY
from cjo_platform.backoff import RetryPolicy
from cjo_platform.config import Env
from cjo_platform.errors import InvalidArgument


def built(outgoing: OutgoingEmail, sender: str, date: datetime) -> email.message.EmailMessage:
    """The message build_email writes, as a receiver parses it."""
    raw = build_email(outgoing, sender, date)
    assert raw.isascii() and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
EMAIL = EmailContent(subject="Hi", preheader="", html="<p>Hi</p>", text="Hi")


def problems(**overrides: object) -> dict[str, str]:
    args: dict[str, object] = {
        "idempotency_key": "k1", "profile_id": "p1", "address": "ada@example.com",
        "channel": Channel.EMAIL, "email": EMAIL, "journey_id": "", "enrollment_id": ""}
    args.update(overrides)
    return {v.field: v.description for v in validate_send(**args).items}  # type: ignore[arg-type]


@pytest.mark.parametrize("address", [
    "ada@example.com", "ada.lovelace+news@mail.example.co.uk", "o'brien@example.ie",
    "x@a-b.example", "jörg@bücher.example", "用户@例子.广告", "ada@BÜCHER.example",
    "ada@xn--bcher-kva.example", "ü" * 32 + "@example.com"])
def test_plausible_addresses_pass(address: str) -> None:
    assert is_plausible_email(address)


@pytest.mark.parametrize("address", [
    "", "ada", "ada@", "@example.com", "ada@localhost", "ada@example..com", "ada@-example.com",
    "ada lovelace@example.com", "ada@example.com\r\nRCPT TO:<eve@example.com>",
    "<ada@example.com>", "ada@example.com, eve@example.com", "ada..l@example.com",
    "a" * 65 + "@example.com", "ada@" + "a" * 250 + ".com",
    # Internationalised, but malformed: an empty label, an invisible or a space character, a
    # code point IDNA 2008 forbids, no dot, 66 octets of local part in 33 characters.
    "jörg@bücher..example", "j\u200börg@example.com", "jörg\u00a0x@example.com",
    "ada@b_cher.example", "ada@bücher", "ü" * 33 + "@example.com", "jörg@bü\ncher.example",
    # Invisible characters in the domain, which IDNA mapping would drop or keep silently; a
    # space; an A-label that is not Punycode of anything.
    "ada@bü\u200bcher.example", "ada@bü\u00adcher.example", "ada@bücher.example\u200d",
    "ada@bücher .example", "ada@xn--zz.example"])
def test_implausible_addresses_fail(address: str) -> None:
    assert not is_plausible_email(address)


def test_a_domain_travels_as_its_a_label_and_a_non_ascii_local_part_needs_smtputf8() -> None:
    someone = parse_email("someone@Bücher.example")
    assert (someone.transport, someone.needs_smtputf8) == ("someone@xn--bcher-kva.example",
                                                           False)
    # IDNA 2008, not the stdlib's IDNA 2003: faß.de is not fass.de.
    assert parse_email("ada@faß.de").transport == "ada@xn--fa-hia.de"
    jorg = parse_email("jörg@bücher.example")
    # Over SMTPUTF8 too: the domain as its A-label, converted by us (IDNA 2008), not a relay.
    assert (jorg.transport, jorg.needs_smtputf8) == ("jörg@xn--bcher-kva.example", True)
    assert jorg.domain == "bücher.example"


@pytest.mark.parametrize("typed", [
    "jörg@bücher.example", "jörg@BÜCHER.example", "jörg@bücher\u3002example",
    "jörg@xn--bcher-kva.example", "jörg@XN--BCHER-KVA.Example", "jo\u0308rg@bücher.example"])
def test_every_spelling_of_one_mailbox_has_one_transport_form(typed: str) -> None:
    # An ideographic full stop, upper case, an A-label, a decomposed ö (NFD): all the same
    # mailbox, sent and compared as NFC local part @ lower-case A-label.
    assert parse_email(typed).transport == "jörg@xn--bcher-kva.example"
    assert canonical_email(typed) == "jörg@xn--bcher-kva.example"


def test_the_canonical_form_keeps_the_local_part_case_and_lowers_the_domain() -> None:
    # Local parts may be case-sensitive (RFC 5321 2.4); delivery has always kept their case.
    assert canonical_email("Ada.L@Example.COM") == "Ada.L@example.com"
    assert canonical_email("ada@example.com") == "ada@example.com"
    # What does not parse (an old row) stays as it is rather than failing a look-up.
    assert canonical_email("not an address") == "not an address"


@pytest.mark.parametrize(("sender", "ok"), [
    ("Acme <news@acme.example>", True), ("Bücher <jörg@bücher.example>", True),
    ("news@acme.example", True), ('"Acme, Inc." <news@acme.example>', True),
    ("Acme Inc. <news@acme.example>", True), ("J. Smith <j.smith@acme.example>", True),
    ("Acme", False), ("Acme <news@acme..example>", False),
    # parseaddr read only the first of these; the header would carry both mailboxes.
    ("Acme <news@acme.example>, eve@evil.example", False),
    ("news@acme.example, eve@evil.example", False), ("Acme: news@acme.example;", False),
    ("Acme <news@acme.example", False), ("Ac\u200bme <news@acme.example>", False),
    ("Acme <news@bü\u200bcher.example>", False)])
def test_an_smtp_provider_from_follows_the_address_rule(sender: str, ok: bool) -> None:
    problems = validate_provider(channel=Channel.EMAIL, kind=ProviderKind.SMTP, display_name="",
                                 config={"host": "relay.example", "from": sender}, secrets={})
    assert {v.field for v in problems.items} == (set() if ok else {"provider.config[from]"})


def test_the_from_header_is_rebuilt_from_its_one_mailbox() -> None:
    assert parse_mailbox("Jörg <jörg@BÜCHER\u3002example>").header == (
        "Jörg <jörg@xn--bcher-kva.example>")
    assert parse_mailbox('"Acme, Inc." <News@Acme.example>').header == (
        '"Acme, Inc." <News@acme.example>')
    assert parse_mailbox("news@acme.example").header == "news@acme.example"
    with pytest.raises(ValueError, match="exactly one mailbox"):
        parse_mailbox("Acme <news@acme.example>, eve@evil.example")


@pytest.mark.parametrize(("sender", "ok"), [
    ("Acme <news@acme.example>", True), ("Acme <news@acme.example>, eve@evil.example", False)])
def test_cjo_smtp_from_follows_the_from_rule_at_start(sender: str, ok: bool) -> None:
    env = Env({"CJO_SMTP_FROM": sender})
    load_smtp_settings(env, connections=1)
    assert env.errors == ([] if ok else [
        "CJO_SMTP_FROM must be one address like 'Brand <news@brand.example>'"])


def test_a_valid_request_has_no_problems() -> None:
    assert problems() == {}


def test_each_problem_names_its_field() -> None:
    assert problems(idempotency_key="") == {"idempotency_key": "is required"}
    assert problems(idempotency_key="k" * 129) == {"idempotency_key": "at most 128 characters"}
    assert problems(address="") == {"recipient.address": "is required"}
    assert problems(address="not-an-address") == {
        "recipient.address": "is not a valid email address"}
    assert problems(channel=None) == {"content.channel": "is required"}
    assert problems(channel=Channel.IN_APP) == {
        "content.in_app": "is required for CHANNEL_IN_APP"}
    assert problems(channel=Channel.SMS) == {
        "content.sms": "is required for CHANNEL_SMS",
        "recipient.address": "must be a phone number in E.164 form, e.g. +14155550100"}
    assert problems(email=None) == {"content.email": "is required for CHANNEL_EMAIL"}
    assert problems(email=EmailContent("", "", "<p>x</p>", "")) == {
        "content.email.subject": "is required"}
    assert problems(email=EmailContent("a\r\nBcc: eve@example.com", "", "x", "")) == {
        "content.email.subject": "must be a single line"}
    assert problems(email=EmailContent("Hi", "", " ", "")) == {
        "content.email": "needs an html or a text body"}
    assert problems(journey_id="j" * 200)["journey_id"] == "at most 128 characters"


def test_message_names() -> None:
    assert message_id_of("messages/abc") == "abc"
    for bad in ("abc", "messages/", "messages/a/b", "journeys/abc"):
        with pytest.raises(InvalidArgument):
            message_id_of(bad)


def test_retry_delays_grow_exponentially_with_jitter_and_a_cap() -> None:
    assert RetryPolicy(max_attempts=5, base_delay=timedelta(seconds=30),
                                        max_delay=timedelta(hours=1), jitter=0.5) == MESSAGE_RETRY
    policy = dataclasses.replace(MESSAGE_RETRY, max_attempts=10, max_delay=timedelta(minutes=10))
    rng = random.Random(7)
    for attempt, ceiling in [(1, 30), (2, 60), (3, 120), (4, 240), (5, 480), (6, 600), (9, 600)]:
        delays = {policy.delay(attempt, rng) for _ in range(50)}
        assert all(timedelta(seconds=ceiling / 2) <= d <= timedelta(seconds=ceiling)
                   for d in delays)
        assert len(delays) > 1  # jittered, so queued messages do not retry in lockstep


def test_transitions_after_an_attempt() -> None:
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(1)
    sent = after_success(1, "<m1@cjo>")
    assert (sent.status, sent.provider_message_id, sent.error) == (
        MessageStatus.SENT, "<m1@cjo>", "")

    later = after_failure(1, ProviderError("451 try later", transient=True), policy, NOW, rng)
    assert later.status is MessageStatus.QUEUED and later.error == "451 try later"
    assert later.next_attempt_time is not None and later.next_attempt_time > NOW

    used_up = after_failure(3, ProviderError("451 try later", transient=True), policy, NOW, rng)
    assert used_up.status is MessageStatus.FAILED and used_up.next_attempt_time is None

    refused = after_failure(1, ProviderError("550 no such user", transient=False), policy, NOW,
                            rng)
    assert (refused.status, refused.error) == (MessageStatus.FAILED, "550 no such user")

    back = released(2, NOW)
    assert (back.status, back.attempts, back.next_attempt_time, back.error) == (
        MessageStatus.QUEUED, 1, NOW, None)


@pytest.mark.parametrize(("exc", "transient", "text"), [
    (ConnectionRefusedError(111, "Connection refused"), True, "Connection refused"),
    (TimeoutError(), True, "timed out"),
    (smtplib.SMTPServerDisconnected("gone"), True, "connection closed"),
    (smtplib.SMTPDataError(451, b"4.3.0 try later"), True, "451 4.3.0 try later"),
    (smtplib.SMTPDataError(554, b"5.7.1 spam"), False, "554 5.7.1 spam"),
    (smtplib.SMTPSenderRefused(553, b"bad sender", "x@y.z"), False, "553 bad sender"),
    (smtplib.SMTPRecipientsRefused({"a@b.c": (550, b"5.1.1 no such user")}), False,
     "550 5.1.1 no such user"),
    (smtplib.SMTPRecipientsRefused({"a@b.c": (452, b"4.2.2 mailbox full")}), True,
     "452 4.2.2 mailbox full"),
    # Wrong credentials stay wrong: failed for good, not retried; a 4xx AUTH answer is retried.
    (smtplib.SMTPAuthenticationError(535, b"bad credentials"), False, "535 bad credentials"),
    (smtplib.SMTPAuthenticationError(454, b"try later"), True, "454 try later"),
    (smtplib.SMTPConnectError(554, b"go away"), True, "554 go away"),
])
def test_smtp_errors_are_classified(exc: BaseException, transient: bool, text: str) -> None:
    error = classify(exc, "SMTP server h:25")
    assert error.transient is transient
    assert text in error.message


def test_email_has_both_bodies_and_a_stable_message_id() -> None:
    outgoing = OutgoingEmail(message_id="m1", to="ada@example.com", subject="Grüße, Ada",
                             preheader="Your week", html="<html><body><p>Hi</p></body></html>",
                             text="Hi")
    msg = built(outgoing, "Brand <news@brand.example>", NOW)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Message-ID"] == "<m1@cjo>"
    assert msg["Subject"] == "Grüße, Ada"
    assert msg["Date"] == "Sun, 01 Mar 2026 12:00:00 +0000"
    assert msg["From"] == "Brand <news@brand.example>"
    html = msg.get_body(("html",))
    text = msg.get_body(("plain",))
    assert html is not None and text is not None
    assert "Your week</div><p>Hi</p>" in html.get_content()
    assert text.get_content().strip() == "Hi"


def test_single_body_emails() -> None:
    html_only = built(OutgoingEmail("m1", "a@b.co", "S", "", "<p>x</p>", ""), "x@y.co", NOW)
    assert html_only.get_content_type() == "text/html"
    text_only = built(OutgoingEmail("m1", "a@b.co", "S", "pre", "", "x"), "x@y.co", NOW)
    assert text_only.get_content_type() == "text/plain"


def test_preheader_goes_first_in_the_body_and_is_escaped() -> None:
    assert with_preheader("<p>x</p>", "") == "<p>x</p>"
    assert with_preheader("<p>x</p>", "a<b").endswith(">a&lt;b</div><p>x</p>")
    body = with_preheader('<html><BODY class="c"><p>x</p></BODY></html>', "pre")
    assert body.startswith('<html><BODY class="c"><div')
