import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MissingVariablePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MISSING_VARIABLE_POLICY_UNSPECIFIED: _ClassVar[MissingVariablePolicy]
    MISSING_VARIABLE_POLICY_LENIENT: _ClassVar[MissingVariablePolicy]
    MISSING_VARIABLE_POLICY_STRICT: _ClassVar[MissingVariablePolicy]
MISSING_VARIABLE_POLICY_UNSPECIFIED: MissingVariablePolicy
MISSING_VARIABLE_POLICY_LENIENT: MissingVariablePolicy
MISSING_VARIABLE_POLICY_STRICT: MissingVariablePolicy

class EmailTemplate(_message.Message):
    __slots__ = ("subject", "preheader", "html", "text")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PREHEADER_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    preheader: str
    html: str
    text: str
    def __init__(self, subject: _Optional[str] = ..., preheader: _Optional[str] = ..., html: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ContentItem(_message.Message):
    __slots__ = ("name", "key", "display_name", "tags", "email", "revision", "etag", "create_time", "update_time", "sms", "push", "in_app", "webhook", "missing_variables", "latest_version", "default_locale", "localizations", "variants", "experiment_key")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SMS_FIELD_NUMBER: _ClassVar[int]
    PUSH_FIELD_NUMBER: _ClassVar[int]
    IN_APP_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    MISSING_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LOCALE_FIELD_NUMBER: _ClassVar[int]
    LOCALIZATIONS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_KEY_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    display_name: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    email: EmailTemplate
    revision: int
    etag: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    sms: SmsTemplate
    push: PushTemplate
    in_app: InAppTemplate
    webhook: WebhookTemplate
    missing_variables: MissingVariablePolicy
    latest_version: int
    default_locale: str
    localizations: _containers.RepeatedCompositeFieldContainer[Localization]
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    experiment_key: str
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., display_name: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., email: _Optional[_Union[EmailTemplate, _Mapping]] = ..., revision: _Optional[int] = ..., etag: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sms: _Optional[_Union[SmsTemplate, _Mapping]] = ..., push: _Optional[_Union[PushTemplate, _Mapping]] = ..., in_app: _Optional[_Union[InAppTemplate, _Mapping]] = ..., webhook: _Optional[_Union[WebhookTemplate, _Mapping]] = ..., missing_variables: _Optional[_Union[MissingVariablePolicy, str]] = ..., latest_version: _Optional[int] = ..., default_locale: _Optional[str] = ..., localizations: _Optional[_Iterable[_Union[Localization, _Mapping]]] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., experiment_key: _Optional[str] = ...) -> None: ...

class Localization(_message.Message):
    __slots__ = ("locale", "email", "sms", "push", "in_app", "webhook")
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    SMS_FIELD_NUMBER: _ClassVar[int]
    PUSH_FIELD_NUMBER: _ClassVar[int]
    IN_APP_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    locale: str
    email: EmailTemplate
    sms: SmsTemplate
    push: PushTemplate
    in_app: InAppTemplate
    webhook: WebhookTemplate
    def __init__(self, locale: _Optional[str] = ..., email: _Optional[_Union[EmailTemplate, _Mapping]] = ..., sms: _Optional[_Union[SmsTemplate, _Mapping]] = ..., push: _Optional[_Union[PushTemplate, _Mapping]] = ..., in_app: _Optional[_Union[InAppTemplate, _Mapping]] = ..., webhook: _Optional[_Union[WebhookTemplate, _Mapping]] = ...) -> None: ...

class Variant(_message.Message):
    __slots__ = ("key", "weight", "email", "sms", "push", "in_app", "webhook")
    KEY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    SMS_FIELD_NUMBER: _ClassVar[int]
    PUSH_FIELD_NUMBER: _ClassVar[int]
    IN_APP_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    key: str
    weight: int
    email: EmailTemplate
    sms: SmsTemplate
    push: PushTemplate
    in_app: InAppTemplate
    webhook: WebhookTemplate
    def __init__(self, key: _Optional[str] = ..., weight: _Optional[int] = ..., email: _Optional[_Union[EmailTemplate, _Mapping]] = ..., sms: _Optional[_Union[SmsTemplate, _Mapping]] = ..., push: _Optional[_Union[PushTemplate, _Mapping]] = ..., in_app: _Optional[_Union[InAppTemplate, _Mapping]] = ..., webhook: _Optional[_Union[WebhookTemplate, _Mapping]] = ...) -> None: ...

class SmsTemplate(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class PushTemplate(_message.Message):
    __slots__ = ("title", "body", "deep_link", "image_url")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    DEEP_LINK_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    title: str
    body: str
    deep_link: str
    image_url: str
    def __init__(self, title: _Optional[str] = ..., body: _Optional[str] = ..., deep_link: _Optional[str] = ..., image_url: _Optional[str] = ...) -> None: ...

class InAppButtonTemplate(_message.Message):
    __slots__ = ("label", "link")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    label: str
    link: str
    def __init__(self, label: _Optional[str] = ..., link: _Optional[str] = ...) -> None: ...

class InAppTemplate(_message.Message):
    __slots__ = ("title", "body", "buttons")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    BUTTONS_FIELD_NUMBER: _ClassVar[int]
    title: str
    body: str
    buttons: _containers.RepeatedCompositeFieldContainer[InAppButtonTemplate]
    def __init__(self, title: _Optional[str] = ..., body: _Optional[str] = ..., buttons: _Optional[_Iterable[_Union[InAppButtonTemplate, _Mapping]]] = ...) -> None: ...

class WebhookTemplate(_message.Message):
    __slots__ = ("json_body",)
    JSON_BODY_FIELD_NUMBER: _ClassVar[int]
    json_body: str
    def __init__(self, json_body: _Optional[str] = ...) -> None: ...

class ContentVersion(_message.Message):
    __slots__ = ("name", "version", "revision", "content_item", "snippets", "create_time", "rolled_back_from")
    class SnippetsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ITEM_FIELD_NUMBER: _ClassVar[int]
    SNIPPETS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FROM_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    revision: int
    content_item: ContentItem
    snippets: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    rolled_back_from: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., revision: _Optional[int] = ..., content_item: _Optional[_Union[ContentItem, _Mapping]] = ..., snippets: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rolled_back_from: _Optional[int] = ...) -> None: ...

class Snippet(_message.Message):
    __slots__ = ("name", "key", "source", "revision", "etag", "create_time", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    key: str
    source: str
    revision: int
    etag: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., key: _Optional[str] = ..., source: _Optional[str] = ..., revision: _Optional[int] = ..., etag: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ContentSettings(_message.Message):
    __slots__ = ("name", "default_locale", "revision", "etag", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_LOCALE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    default_locale: str
    revision: int
    etag: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., default_locale: _Optional[str] = ..., revision: _Optional[int] = ..., etag: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
