from cjo.common.v1 import common_pb2 as _common_pb2
from cjo.delivery.v1 import inbox_pb2 as _inbox_pb2
from cjo.delivery.v1 import message_pb2 as _message_pb2
from cjo.delivery.v1 import policy_pb2 as _policy_pb2
from cjo.delivery.v1 import provider_pb2 as _provider_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SendMessageRequest(_message.Message):
    __slots__ = ("idempotency_key", "recipient", "content", "journey_id", "enrollment_id", "topic", "transactional", "time_zone", "decision_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    ENROLLMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    TRANSACTIONAL_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    recipient: _message_pb2.Recipient
    content: _common_pb2.RenderedMessage
    journey_id: str
    enrollment_id: str
    topic: str
    transactional: bool
    time_zone: str
    decision_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., recipient: _Optional[_Union[_message_pb2.Recipient, _Mapping]] = ..., content: _Optional[_Union[_common_pb2.RenderedMessage, _Mapping]] = ..., journey_id: _Optional[str] = ..., enrollment_id: _Optional[str] = ..., topic: _Optional[str] = ..., transactional: _Optional[bool] = ..., time_zone: _Optional[str] = ..., decision_id: _Optional[str] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ("message", "duplicate")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    message: _message_pb2.Message
    duplicate: bool
    def __init__(self, message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class BatchSendMessagesRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[SendMessageRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[SendMessageRequest, _Mapping]]] = ...) -> None: ...

class BatchSendMessagesResult(_message.Message):
    __slots__ = ("status", "message", "duplicate")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    message: _message_pb2.Message
    duplicate: bool
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class BatchSendMessagesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchSendMessagesResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchSendMessagesResult, _Mapping]]] = ...) -> None: ...

class GetMessageRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetMessageResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _message_pb2.Message
    def __init__(self, message: _Optional[_Union[_message_pb2.Message, _Mapping]] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ("profile_id", "journey_id", "page_size", "page_token", "status")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    journey_id: str
    page_size: int
    page_token: str
    status: _message_pb2.MessageStatus
    def __init__(self, profile_id: _Optional[str] = ..., journey_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., status: _Optional[_Union[_message_pb2.MessageStatus, str]] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_message_pb2.Message]
    next_page_token: str
    def __init__(self, messages: _Optional[_Iterable[_Union[_message_pb2.Message, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateProviderRequest(_message.Message):
    __slots__ = ("provider", "request_id")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    provider: _provider_pb2.Provider
    request_id: str
    def __init__(self, provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: _provider_pb2.Provider
    def __init__(self, provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ...) -> None: ...

class GetProviderRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: _provider_pb2.Provider
    def __init__(self, provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ...) -> None: ...

class ListProvidersRequest(_message.Message):
    __slots__ = ("channel",)
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ...) -> None: ...

class ListProvidersResponse(_message.Message):
    __slots__ = ("providers",)
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    providers: _containers.RepeatedCompositeFieldContainer[_provider_pb2.Provider]
    def __init__(self, providers: _Optional[_Iterable[_Union[_provider_pb2.Provider, _Mapping]]] = ...) -> None: ...

class UpdateProviderRequest(_message.Message):
    __slots__ = ("provider", "update_mask", "request_id")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    provider: _provider_pb2.Provider
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateProviderResponse(_message.Message):
    __slots__ = ("provider",)
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    provider: _provider_pb2.Provider
    def __init__(self, provider: _Optional[_Union[_provider_pb2.Provider, _Mapping]] = ...) -> None: ...

class DeleteProviderRequest(_message.Message):
    __slots__ = ("name", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteProviderResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetDeliveryPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetDeliveryPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: _policy_pb2.DeliveryPolicy
    def __init__(self, policy: _Optional[_Union[_policy_pb2.DeliveryPolicy, _Mapping]] = ...) -> None: ...

class UpdateDeliveryPolicyRequest(_message.Message):
    __slots__ = ("policy", "request_id")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    policy: _policy_pb2.DeliveryPolicy
    request_id: str
    def __init__(self, policy: _Optional[_Union[_policy_pb2.DeliveryPolicy, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateDeliveryPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: _policy_pb2.DeliveryPolicy
    def __init__(self, policy: _Optional[_Union[_policy_pb2.DeliveryPolicy, _Mapping]] = ...) -> None: ...

class ListInboxMessagesRequest(_message.Message):
    __slots__ = ("profile_id", "include_dismissed", "page_size", "page_token")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DISMISSED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    include_dismissed: bool
    page_size: int
    page_token: str
    def __init__(self, profile_id: _Optional[str] = ..., include_dismissed: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListInboxMessagesResponse(_message.Message):
    __slots__ = ("messages", "next_page_token")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_inbox_pb2.InboxMessage]
    next_page_token: str
    def __init__(self, messages: _Optional[_Iterable[_Union[_inbox_pb2.InboxMessage, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MarkInboxMessageRequest(_message.Message):
    __slots__ = ("name", "state")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: _inbox_pb2.InboxState
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[_inbox_pb2.InboxState, str]] = ...) -> None: ...

class MarkInboxMessageResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _inbox_pb2.InboxMessage
    def __init__(self, message: _Optional[_Union[_inbox_pb2.InboxMessage, _Mapping]] = ...) -> None: ...

class SubscribeInboxRequest(_message.Message):
    __slots__ = ("profile_id",)
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    def __init__(self, profile_id: _Optional[str] = ...) -> None: ...

class SubscribeInboxResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _inbox_pb2.InboxMessage
    def __init__(self, message: _Optional[_Union[_inbox_pb2.InboxMessage, _Mapping]] = ...) -> None: ...

class EraseProfilesRequest(_message.Message):
    __slots__ = ("profile_ids",)
    PROFILE_IDS_FIELD_NUMBER: _ClassVar[int]
    profile_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, profile_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class EraseProfileResult(_message.Message):
    __slots__ = ("profile_id", "canceled_count", "in_flight_count")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    CANCELED_COUNT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_COUNT_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    canceled_count: int
    in_flight_count: int
    def __init__(self, profile_id: _Optional[str] = ..., canceled_count: _Optional[int] = ..., in_flight_count: _Optional[int] = ...) -> None: ...

class EraseProfilesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EraseProfileResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EraseProfileResult, _Mapping]]] = ...) -> None: ...
