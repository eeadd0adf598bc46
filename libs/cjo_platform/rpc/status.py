"""Domain errors <-> google.rpc.Status with ErrorInfo and BadRequest details (AIP-193)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from cjo_platform.errors import CjoError, InvalidArgument

OK = status_pb2.Status(code=code_pb2.OK)


def to_status_proto(error: CjoError, domain: str) -> status_pb2.Status:
    """A rich status for ``error``: ErrorInfo always, BadRequest for invalid arguments."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=domain, metadata=error.metadata)
    details = [_pack(info)]
    if isinstance(error, InvalidArgument):
        bad = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ])
        details.append(_pack(bad))
    return status_pb2.Status(code=getattr(code_pb2, error.code_name), message=error.message,
                             details=details)


def to_grpc_status(error: CjoError, domain: str) -> grpc.Status:
    return rpc_status.to_status(to_status_proto(error, domain))


def internal_status(message: str = "internal error") -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message=message)


def field_violations(status: status_pb2.Status) -> dict[str, str]:
    """Field -> description of a status's BadRequest details (clients and tests use it)."""
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.update({v.field: v.description for v in bad.field_violations})
    return found


def error_reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason: str = info.reason
            return reason
    return ""


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
