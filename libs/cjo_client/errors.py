"""A failed call in words: the status code, the ErrorInfo reason and each BadRequest field
violation, decoded from the google.rpc.Status in the trailing metadata."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

_DETAILS_KEY = "grpc-status-details-bin"


def _status(error: grpc.RpcError) -> status_pb2.Status | None:
    # Both grpc.Call (sync) and grpc.aio.AioRpcError carry trailing_metadata(); the latter is
    # no grpc.Call, so grpc_status.rpc_status.from_call cannot be used for it.
    trailing: Any = getattr(error, "trailing_metadata", lambda: None)()
    for key, value in trailing or ():
        if key == _DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    return None


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call, or '' when it carries none."""
    status = _status(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason)
    return ""


def describe_error(error: grpc.RpcError) -> list[str]:
    """Lines for a person: ``CODE: message``, then ``reason: X (domain)``, then one
    ``field: description`` per violation."""
    code = getattr(error, "code", lambda: None)()
    details = getattr(error, "details", lambda: str(error))()
    lines = [f"{code.name if code is not None else 'ERROR'}: {details or ''}".rstrip()]
    status = _status(error)
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            lines.append(f"  reason: {info.reason} ({info.domain})")
            lines.extend(f"  {k}: {v}" for k, v in sorted(info.metadata.items()))
        elif detail.Unpack(bad):
            lines.extend(f"  {v.field}: {v.description}" for v in bad.field_violations)
    return lines
