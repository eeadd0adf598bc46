"""One request of a batch rendered into its result, errors included."""

from __future__ import annotations

from cjo.content.v1 import content_service_pb2 as pb
from cjo_content.api.convert import context_from_proto, rendered_message
from cjo_content.domain.rendering import CompiledContent
from cjo_platform.errors import CjoError
from cjo_platform.logging import get_logger
from cjo_platform.rpc.status import OK, internal_status, to_status_proto

DOMAIN = "content.cjo"
log = get_logger("cjo.content")


def render_result(workspace: str, compiled: CompiledContent, version: int, channel: str,
                  locale: str, context: pb.RenderContext, workspace_locale: str = "",
                  ) -> pb.BatchRenderContentResult:
    """One render; whatever goes wrong stays in this result's status."""
    try:
        rendering = compiled.render_for(
            channel, context_from_proto(context, locale, workspace, workspace_locale))
        return pb.BatchRenderContentResult(status=OK, message=rendered_message(
            compiled.key, compiled.revision, version, channel, rendering))
    except CjoError as exc:
        return pb.BatchRenderContentResult(status=to_status_proto(exc, DOMAIN))
    except Exception:
        log.exception("render failed unexpectedly", content_key=compiled.key)
        return pb.BatchRenderContentResult(status=internal_status("render failed"))
