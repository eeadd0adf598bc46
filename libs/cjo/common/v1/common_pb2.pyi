from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_EMAIL: _ClassVar[Channel]
    CHANNEL_SMS: _ClassVar[Channel]
    CHANNEL_PUSH: _ClassVar[Channel]
    CHANNEL_IN_APP: _ClassVar[Channel]
    CHANNEL_WEBHOOK: _ClassVar[Channel]

class SmsEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SMS_ENCODING_UNSPECIFIED: _ClassVar[SmsEncoding]
    SMS_ENCODING_GSM7: _ClassVar[SmsEncoding]
    SMS_ENCODING_UCS2: _ClassVar[SmsEncoding]
CHANNEL_UNSPECIFIED: Channel
CHANNEL_EMAIL: Channel
CHANNEL_SMS: Channel
CHANNEL_PUSH: Channel
CHANNEL_IN_APP: Channel
CHANNEL_WEBHOOK: Channel
SMS_ENCODING_UNSPECIFIED: SmsEncoding
SMS_ENCODING_GSM7: SmsEncoding
SMS_ENCODING_UCS2: SmsEncoding

class RenderedEmail(_message.Message):
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

class RenderedSms(_message.Message):
    __slots__ = ("text", "encoding", "segments")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    text: str
    encoding: SmsEncoding
    segments: int
    def __init__(self, text: _Optional[str] = ..., encoding: _Optional[_Union[SmsEncoding, str]] = ..., segments: _Optional[int] = ...) -> None: ...

class RenderedPush(_message.Message):
    __slots__ = ("title", "body", "deep_link", "image_url", "data")
    class DataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    DEEP_LINK_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    title: str
    body: str
    deep_link: str
    image_url: str
    data: _containers.ScalarMap[str, str]
    def __init__(self, title: _Optional[str] = ..., body: _Optional[str] = ..., deep_link: _Optional[str] = ..., image_url: _Optional[str] = ..., data: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InAppButton(_message.Message):
    __slots__ = ("label", "link")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    label: str
    link: str
    def __init__(self, label: _Optional[str] = ..., link: _Optional[str] = ...) -> None: ...

class RenderedInApp(_message.Message):
    __slots__ = ("title", "body", "buttons")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    BUTTONS_FIELD_NUMBER: _ClassVar[int]
    title: str
    body: str
    buttons: _containers.RepeatedCompositeFieldContainer[InAppButton]
    def __init__(self, title: _Optional[str] = ..., body: _Optional[str] = ..., buttons: _Optional[_Iterable[_Union[InAppButton, _Mapping]]] = ...) -> None: ...

class RenderedWebhook(_message.Message):
    __slots__ = ("json_body",)
    JSON_BODY_FIELD_NUMBER: _ClassVar[int]
    json_body: str
    def __init__(self, json_body: _Optional[str] = ...) -> None: ...

class RenderedMessage(_message.Message):
    __slots__ = ("channel", "content_key", "content_revision", "email", "sms", "push", "in_app", "webhook", "locale", "content_version", "variant", "variant_weight")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    SMS_FIELD_NUMBER: _ClassVar[int]
    PUSH_FIELD_NUMBER: _ClassVar[int]
    IN_APP_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    channel: Channel
    content_key: str
    content_revision: int
    email: RenderedEmail
    sms: RenderedSms
    push: RenderedPush
    in_app: RenderedInApp
    webhook: RenderedWebhook
    locale: str
    content_version: int
    variant: str
    variant_weight: int
    def __init__(self, channel: _Optional[_Union[Channel, str]] = ..., content_key: _Optional[str] = ..., content_revision: _Optional[int] = ..., email: _Optional[_Union[RenderedEmail, _Mapping]] = ..., sms: _Optional[_Union[RenderedSms, _Mapping]] = ..., push: _Optional[_Union[RenderedPush, _Mapping]] = ..., in_app: _Optional[_Union[RenderedInApp, _Mapping]] = ..., webhook: _Optional[_Union[RenderedWebhook, _Mapping]] = ..., locale: _Optional[str] = ..., content_version: _Optional[int] = ..., variant: _Optional[str] = ..., variant_weight: _Optional[int] = ...) -> None: ...
