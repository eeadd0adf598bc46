"""What an API key may call: the scope every RPC of every service needs.

The table names each method explicitly, so a new RPC cannot be forgotten: a test holds it to every
service in the generated descriptors, and a method missing here needs ADMIN (fails closed).
Scopes nest: ADMIN includes WRITE, WRITE includes READ and INGEST. The service token is not a key
and passes every check (service-to-service calls act for the workspace whose work they do).
"""

from __future__ import annotations

import enum


class Scope(enum.Enum):
    """Values match ``cjo.identity.v1.ApiKeyScope`` (UNSPECIFIED, 0, is ADMIN)."""

    ADMIN = 1
    WRITE = 2
    READ = 3
    INGEST = 4

    @classmethod
    def of(cls, value: int) -> Scope:
        """The scope stored or sent as ``value``; 0 (unset, or a key older than scopes) is
        ADMIN, so existing keys and clients keep working."""
        return cls(value) if value else cls.ADMIN

    @property
    def label(self) -> str:
        return self.name.lower()


# What each scope a key holds lets it call.
_GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset(Scope),
    Scope.WRITE: frozenset({Scope.WRITE, Scope.READ, Scope.INGEST}),
    Scope.READ: frozenset({Scope.READ}),
    Scope.INGEST: frozenset({Scope.INGEST}),
}


def allows(held: Scope, needed: Scope) -> bool:
    return needed in _GRANTS[held]


A, W, R, INGEST = Scope.ADMIN, Scope.WRITE, Scope.READ, Scope.INGEST


def _service(full_name: str, methods: dict[str, Scope]) -> dict[str, Scope]:
    return {f"/{full_name}/{method}": scope for method, scope in methods.items()}


# Methods only the service token may call (AuthInterceptor refuses keys first) are ADMIN here.
REQUIRED_SCOPES: dict[str, Scope] = {
    **_service("cjo.identity.v1.WorkspaceService", {
        "CreateWorkspace": A, "GetWorkspace": R, "CreateApiKey": A, "DeleteApiKey": A,
        "AuthenticateApiKey": A, "ListApiKeys": A, "RevokeApiKey": A, "RotateApiKey": A,
    }),
    **_service("cjo.identity.v1.IdentityService", {
        "IngestEvents": INGEST,
        "GetProfile": R, "BatchGetProfiles": R, "LookupProfile": R, "ListProfileEvents": R,
        "BatchCheckConsent": R, "ListProfiles": R, "ExportProfile": R,
        "GetIdentitySettings": R, "UpdateIdentitySettings": A,
        "CreateSegment": W, "GetSegment": R, "ListSegments": R, "UpdateSegment": W,
        "DeleteSegment": W, "ListSegmentMembers": R, "DeleteProfile": W,
    }),
    **_service("cjo.content.v1.ContentService", {
        "CreateContentItem": W, "GetContentItem": R, "ListContentItems": R,
        "UpdateContentItem": W, "DeleteContentItem": W, "PublishContentItem": W,
        "RollbackContentItem": W, "ListContentItemVersions": R,
        # Rendering changes nothing: a preview for a person, or the bodies orchestration sends.
        "RenderContent": R, "BatchRenderContent": R, "PreviewContent": R,
        "CreateSnippet": W, "GetSnippet": R, "ListSnippets": R, "UpdateSnippet": W,
        "DeleteSnippet": W, "GetContentSettings": R, "UpdateContentSettings": A,
    }),
    **_service("cjo.orchestration.v1.OrchestrationService", {
        "CreateJourney": W, "GetJourney": R, "ListJourneys": R, "UpdateJourney": W,
        "PublishJourney": W, "PauseJourney": W, "ResumeJourney": W, "ArchiveJourney": W,
        "Enroll": W, "HandleEvents": W, "GetEnrollment": R, "ListEnrollments": R,
        "GetScheduleOccurrence": R, "ListScheduleOccurrences": R,
    }),
    **_service("cjo.delivery.v1.DeliveryService", {
        "SendMessage": W, "BatchSendMessages": W, "GetMessage": R, "ListMessages": R,
        "CreateProvider": A, "GetProvider": A, "ListProviders": A, "UpdateProvider": A,
        "DeleteProvider": A, "GetDeliveryPolicy": R, "UpdateDeliveryPolicy": A,
        "ListInboxMessages": R, "MarkInboxMessage": W, "SubscribeInbox": R,
        "EraseProfiles": W,
    }),
    **_service("cjo.analytics.v1.AnalyticsService", {
        "RecordFacts": W, "GetJourneyReport": R, "GetJourneyFunnel": R,
        "GetChannelPerformance": R, "GetExperimentResults": R, "ListExperiments": R,
        "GetAttribution": R,
    }),
    **_service("cjo.decisioning.v1.DecisioningService", {
        "CreateAction": W, "GetAction": R, "ListActions": R, "UpdateAction": W,
        "DeleteAction": W, "CreateDecisionPoint": W, "GetDecisionPoint": R,
        "ListDecisionPoints": R, "UpdateDecisionPoint": W, "DeleteDecisionPoint": W,
        # A decision is logged (and may be exposed, budgeted and learned from): a write.
        "Decide": W, "BatchDecide": W, "GetDecision": R, "ListDecisions": R,
        "RecordExposures": W,
        "RecordEvents": W, "RecordMessageFacts": W,
        "RecordForwardingWatermark": W, "GetSendTimes": R, "EvaluatePolicy": R,
        "GetDecisionReport": R,
    }),
    **_service("cjo.common.v1.DeadLetterService", {
        "ListDeadLetters": R, "RetryDeadLetters": A, "PurgeDeadLetters": A,
    }),
}


def required_scope(method: str) -> Scope:
    """The scope a key needs to call the full gRPC ``method`` (ADMIN for one not listed)."""
    return REQUIRED_SCOPES.get(method, Scope.ADMIN)
