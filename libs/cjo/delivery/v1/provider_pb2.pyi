import datetime

from cjo.common.v1 import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProviderKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROVIDER_KIND_UNSPECIFIED: _ClassVar[ProviderKind]
    PROVIDER_KIND_SMTP: _ClassVar[ProviderKind]
    PROVIDER_KIND_HTTP_JSON: _ClassVar[ProviderKind]
    PROVIDER_KIND_TWILIO_SMS: _ClassVar[ProviderKind]
    PROVIDER_KIND_FCM_PUSH: _ClassVar[ProviderKind]
    PROVIDER_KIND_WEBHOOK: _ClassVar[ProviderKind]
PROVIDER_KIND_UNSPECIFIED: ProviderKind
PROVIDER_KIND_SMTP: ProviderKind
PROVIDER_KIND_HTTP_JSON: ProviderKind
PROVIDER_KIND_TWILIO_SMS: ProviderKind
PROVIDER_KIND_FCM_PUSH: ProviderKind
PROVIDER_KIND_WEBHOOK: ProviderKind

class Provider(_message.Message):
    __slots__ = ("name", "provider_id", "channel", "kind", "priority", "display_name", "config", "secrets", "secret_keys", "create_time", "update_time", "etag", "disabled", "status_webhook_url")
    class ConfigEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    SECRET_KEYS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    STATUS_WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    provider_id: str
    channel: _common_pb2.Channel
    kind: ProviderKind
    priority: int
    display_name: str
    config: _containers.ScalarMap[str, str]
    secrets: _containers.ScalarMap[str, str]
    secret_keys: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    disabled: bool
    status_webhook_url: str
    def __init__(self, name: _Optional[str] = ..., provider_id: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., kind: _Optional[_Union[ProviderKind, str]] = ..., priority: _Optional[int] = ..., display_name: _Optional[str] = ..., config: _Optional[_Mapping[str, str]] = ..., secrets: _Optional[_Mapping[str, str]] = ..., secret_keys: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., disabled: _Optional[bool] = ..., status_webhook_url: _Optional[str] = ...) -> None: ...
