"""Where delivery connects on a workspace's behalf: only to public addresses.

A workspace's providers (their URLs, their SMTP host) are set by any of its ADMIN keys. Left
unchecked, they would make delivery a proxy into the network it runs in (server-side request
forgery): a webhook provider at ``http://169.254.169.254/`` or at an internal service, whose
answer came back in the message's error. So every connection to a provider (the HTTP client's
both paths, and a workspace's SMTP servers) dials only addresses that
:func:`~cjo_delivery.domain.providers.is_public_address` accepts. The check is made on the
address the socket is about to connect to, after the name was resolved, so a name that
resolves to a public address once and a private one the next (DNS rebinding) cannot get round
it; nothing is sent, not even a SYN, to a refused address.

CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS turns the check off (a deployment whose providers are
on its own network; development and the tests, which post to 127.0.0.1). The deployment's own
SMTP server (CJO_SMTP_*) is the operator's setting, not a workspace's, and is never checked.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl as ssl_module
from collections.abc import Callable
from typing import TypeVar

from aiohappyeyeballs import AddrInfoType, start_connection

from cjo_delivery.domain.providers import is_public_address, literal_address

SETTING = "CJO_DELIVERY_ALLOW_PRIVATE_DESTINATIONS"

_P = TypeVar("_P", bound=asyncio.BaseProtocol)


class PrivateDestination(OSError):
    """The address to dial is not a public one: refused before connecting."""


def refused(what: str) -> PrivateDestination:
    # errno and strerror: what aiohttp's ClientConnectorError shows; one text for every address
    # of a name, so that aiohappyeyeballs raises it as it is rather than a list.
    return PrivateDestination(errno.EACCES, f"{what}not a public address (refused unless "
                              f"{SETTING} is set)")


def public_socket(addr_info: AddrInfoType) -> socket.socket:
    """A socket to connect to ``addr_info``'s address, which must be public (a socket factory
    for aiohappyeyeballs and aiohttp's connector: it sees the very address dialled)."""
    family, type_, proto, _, sockaddr = addr_info
    if not is_public_address(str(sockaddr[0])):
        raise refused("")
    return socket.socket(family=family, type=type_, proto=proto)


async def connect(protocol_factory: Callable[[], _P], host: str, port: int, *,
                  allow_private: bool, ssl: ssl_module.SSLContext | None = None,
                  server_hostname: str | None = None) -> tuple[asyncio.Transport, _P]:
    """``loop.create_connection`` to ``host``:``port``, dialling only the public addresses
    ``host`` resolves to (:class:`PrivateDestination` when it has none, or does not resolve)
    unless ``allow_private``."""
    loop = asyncio.get_running_loop()
    if allow_private:
        return await loop.create_connection(protocol_factory, host, port, ssl=ssl,
                                            server_hostname=server_hostname)
    try:
        resolved = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        # The same error as a private name's: which names delivery's DNS knows is not told.
        raise refused(f"{host}: ") from None
    infos = [info for info in resolved if is_public_address(str(info[4][0]))]
    if not infos:
        raise refused(f"{host}: ")
    sock = await start_connection(infos, socket_factory=public_socket)
    try:
        return await loop.create_connection(
            protocol_factory, sock=sock, ssl=ssl,
            server_hostname=(server_hostname or host) if ssl is not None else None)
    except BaseException:
        sock.close()
        raise


def check_literal(host: str) -> None:
    """For a call a proxy makes for us: ``host`` must not spell a private address. A name is
    left to the proxy, which resolves it (delivery may not be able to) and whose own rules must
    refuse private destinations (docs/operations.md): no lookup here, so none per send."""
    address = literal_address(host)
    if address is not None and not is_public_address(address):
        raise refused(f"{host}: ")
