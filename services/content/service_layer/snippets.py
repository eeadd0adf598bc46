"""Snippets: create, read, list, change and delete the Liquid blocks items include.

Field violations name fields of the snippet (``key``, ``source``); the API edge puts them
under its request field."""

from __future__ import annotations

from cjo_content.adapters import repository
from cjo_content.domain.errors import check_etag, snippet_not_found, stale
from cjo_content.domain.snippets import Snippet
from cjo_content.domain.validation import check_snippet
from cjo_platform.db.unit_of_work import UnitOfWork
from cjo_platform.errors import AlreadyExists

SNIPPET = "snippet"


def create(uow: UnitOfWork, workspace_id: str, key: str, source: str) -> Snippet:
    """A new snippet at revision 1; ALREADY_EXISTS when the key is taken."""
    check_snippet(key, source).raise_if_any()
    snippet = repository.insert_snippet(uow.session, workspace_id, key, source, uow.now())
    if snippet is None:
        raise AlreadyExists(f"snippet {key!r} already exists", reason="SNIPPET_EXISTS",
                            metadata={"snippet_key": key})
    return snippet


def get(uow: UnitOfWork, workspace_id: str, key: str) -> Snippet:
    snippet = repository.get_snippet(uow.session, workspace_id, key)
    if snippet is None:
        raise snippet_not_found(key)
    return snippet


def page(uow: UnitOfWork, workspace_id: str, after: str | None,
         size: int) -> tuple[list[Snippet], str | None]:
    """Up to ``size`` snippets by key after ``after``; and the key to continue after, None on
    the last page."""
    snippets = repository.snippets_page(uow.session, workspace_id, after, size + 1)
    return snippets[:size], snippets[size - 1].key if len(snippets) > size else None


def _locked(uow: UnitOfWork, workspace_id: str, key: str, etag: str) -> Snippet:
    """The snippet as stored now, locked until the change commits; the caller's etag, when
    given, must still match."""
    snippet = repository.get_snippet(uow.session, workspace_id, key, for_update=True)
    if snippet is None:
        raise snippet_not_found(key)
    check_etag(SNIPPET, key, etag, snippet.etag)
    return snippet


def update(uow: UnitOfWork, workspace_id: str, key: str, source: str,
           etag: str = "") -> Snippet:
    """``source`` as the snippet's next revision (unchanged source: same revision and etag).
    Published versions keep the source they froze. ABORTED when ``etag`` is stale."""
    check_snippet(key, source, key_field="").raise_if_any()
    current = _locked(uow, workspace_id, key, etag)
    if source == current.source:
        return current
    saved = repository.save_snippet(uow.session, workspace_id, current, source, uow.now())
    if saved is None:
        raise stale(SNIPPET, key, current.etag)
    return saved


def delete(uow: UnitOfWork, workspace_id: str, key: str, etag: str = "") -> None:
    """Delete the snippet. ABORTED when ``etag`` is stale."""
    current = _locked(uow, workspace_id, key, etag)
    if not repository.delete_snippet(uow.session, workspace_id, key, current.revision):
        raise stale(SNIPPET, key, current.etag)
