"""Finds the messages providers report on (domain/provider_events.py): by cjo's id, by the id
the provider answered the send with, or by the device token a push went to. One query per kind
of reference for a whole batch. Spends the one-time tokens of signed reports."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import NamedTuple

from sqlalchemy import ColumnElement, String, bindparam, delete, exists, or_, select, true
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import Executable

from cjo_delivery.adapters.tables import message_providers, messages, webhook_tokens
from cjo_delivery.domain.messages import Channel, MessageStatus
from cjo_delivery.domain.provider_events import MessageRef, OneTimeToken
from cjo_platform.db.engine import insert_ignore, pg_array
from cjo_platform.db.probes import pg_by_keys, pg_probes, pg_text

m = messages.c
mp = message_providers.c
_MAX_MESSAGE_ID = 64
_MAX_PROVIDER_ID = 256
_MAX_ADDRESS = 320
# A push engagement belongs to a push the device got: one that reached a provider.
_REACHED = (MessageStatus.SENT.value, MessageStatus.DELIVERED.value)


def resolve(session: Session, workspace_id: str, refs: Sequence[MessageRef],
            provider_id: str | None = None) -> dict[MessageRef, str]:
    """cjo's message id for each reference that finds a message of ``workspace_id`` (one that
    ``provider_id`` may have been handed, when given: recorded as the provider that took it,
    or as one whose call failed (``message_providers``), or any while it is SENDING: a report
    may come before the provider's answer was recorded); cjo's id first, then the provider's,
    then the device token."""
    sent_by: ColumnElement[bool] = (or_(
        m.provider_id == provider_id, m.status == MessageStatus.SENDING.value, exists().where(
            mp.workspace_id == m.workspace_id, mp.message_id == m.message_id,
            mp.provider_id == provider_id)) if provider_id is not None else true())
    ids = {r.message_id for r in refs if 0 < len(r.message_id) <= _MAX_MESSAGE_ID}
    provider_ids = {r.provider_message_id for r in refs
                    if 0 < len(r.provider_message_id) <= _MAX_PROVIDER_ID}
    tokens = {r.device_token for r in refs if 0 < len(r.device_token) <= _MAX_ADDRESS}
    known: set[str] = set()
    by_provider: dict[str, str] = {}
    by_token: dict[str, str] = {}
    if session.get_bind().dialect.name == "postgresql":
        reads = _pg_reads(provider_id is not None)
        params: dict[str, object] = {"workspace_id": workspace_id}
        if provider_id is not None:
            params["provider_id"] = provider_id
        if ids:
            known = set(session.execute(reads.by_id, {
                **params, "keys": pg_array(sorted(ids))}).scalars())
        if provider_ids:
            for row in session.execute(reads.by_provider_id, {
                    **params, "keys": pg_array(sorted(provider_ids))}):
                by_provider.setdefault(row.provider_message_id, row.message_id)
        if tokens:
            for row in session.execute(reads.by_token, {
                    **params, "keys": pg_array(sorted(tokens))}):
                by_token.setdefault(row.address, row.message_id)
    else:
        if ids:
            known = set(session.execute(select(m.message_id).where(
                m.workspace_id == workspace_id, m.message_id.in_(ids), sent_by)).scalars())
        if provider_ids:
            for row in session.execute(select(m.provider_message_id, m.message_id).where(
                    m.workspace_id == workspace_id, m.provider_message_id.in_(provider_ids),
                    sent_by)):
                by_provider.setdefault(row.provider_message_id, row.message_id)
        if tokens:
            # The latest push each token got: what an engagement reported now is about.
            for row in session.execute(select(m.address, m.message_id).where(
                    m.workspace_id == workspace_id, m.channel == Channel.PUSH.value,
                    m.address.in_(tokens), m.status.in_(_REACHED), sent_by).order_by(
                    m.sent_time.desc(), m.message_id.desc())):
                by_token.setdefault(row.address, row.message_id)
    found: dict[MessageRef, str] = {}
    for ref in refs:
        message_id = (ref.message_id if ref.message_id in known
                      else by_provider.get(ref.provider_message_id)
                      or by_token.get(ref.device_token))
        if message_id:
            found[ref] = message_id
    return found


class _Reads(NamedTuple):
    by_id: Executable
    by_provider_id: Executable
    by_token: Executable


@cache
def _pg_reads(by_provider: bool) -> _Reads:
    """:func:`resolve`'s reads on PostgreSQL (``by_provider``: of the messages sent through
    the parameter ``provider_id``): each probes its index on (workspace_id, key) once per key
    (cjo_platform.db.probes), also for a workspace the planner's statistics do not know yet (a
    new tenant, a fresh database). With the workspace a constant, such a workspace's every
    message was read through an index's workspace prefix (ix_messages_address; for the tokens
    by (workspace_id, channel) alone) and filtered by the batch's references, per report."""
    sent_by = ("(t.provider_id = :provider_id "
               f"OR t.status = '{MessageStatus.SENDING.value}' "
               "OR EXISTS (SELECT 1 FROM message_providers p "
               "WHERE p.workspace_id = t.workspace_id AND p.message_id = t.message_id "
               "AND p.provider_id = :provider_id))") if by_provider else ""
    binds = [bindparam("provider_id", type_=String)] if by_provider else []
    # A push's token: the latest push it got that reached a provider (sent_time is the index's
    # next column: the probe reads the token's pushes only).
    reached = ", ".join(f"'{status}'" for status in _REACHED)
    pushed = (f"t.channel = '{Channel.PUSH.value}' AND t.status IN ({reached})"
              + (f" AND {sent_by}" if sent_by else ""))
    return _Reads(
        pg_by_keys([m.message_id], m.message_id, where=sent_by, binds=binds),
        pg_by_keys([m.provider_message_id, m.message_id], m.provider_message_id, where=sent_by,
                   binds=binds),
        pg_text(pg_probes(messages.name, "t.address, t.message_id, t.sent_time", {
            "address": "keys"}, where=pushed) + " ORDER BY x.sent_time DESC, x.message_id DESC",
                ["keys"]).bindparams(*binds).columns(m.address, m.message_id, m.sent_time))


def remember_providers(session: Session, rows: Sequence[tuple[str, str, str]]) -> None:
    """Write down (workspace_id, message_id, provider_id): the provider may have taken the
    message although its call failed (one statement; known ones are left as they are)."""
    insert_ignore(session, message_providers, [
        {"workspace_id": w, "message_id": m_id, "provider_id": p} for w, m_id, p in rows])


def spend_token(session: Session, workspace_id: str, provider_id: str, token: OneTimeToken,
                now: datetime) -> str | None:
    """None when ``token`` was still unspent for the provider (it is spent now, in the
    caller's transaction); else the content digest of the report that spent it. A concurrent
    transaction spending the same token waits for this one on the primary key and then finds it
    spent. Tokens past their expiry are dropped on the way."""
    key = (webhook_tokens.c.workspace_id == workspace_id,
           webhook_tokens.c.provider_id == provider_id)
    session.execute(delete(webhook_tokens).where(*key, webhook_tokens.c.expire_time < now))
    if insert_ignore(session, webhook_tokens, [{
            "workspace_id": workspace_id, "provider_id": provider_id, "token": token.value,
            "expire_time": token.expire_time, "content_digest": token.content_digest}],
            returning=webhook_tokens.c.token):
        return None
    spent = session.execute(select(webhook_tokens.c.content_digest).where(
        *key, webhook_tokens.c.token == token.value)).scalar_one_or_none()
    return str(spent or "")
