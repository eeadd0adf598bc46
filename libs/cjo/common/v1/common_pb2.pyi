from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
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
CHANNEL_UNSPECIFIED: Channel
CHANNEL_EMAIL: Channel
CHANNEL_SMS: Channel
CHANNEL_PUSH: Channel
CHANNEL_IN_APP: Channel
CHANNEL_WEBHOOK: Channel

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

class RenderedMessage(_message.Message):
    __slots__ = ("channel", "content_key", "content_revision", "email")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_REVISION_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    channel: Channel
    content_key: str
    content_revision: int
    email: RenderedEmail
    def __init__(self, channel: _Optional[_Union[Channel, str]] = ..., content_key: _Optional[str] = ..., content_revision: _Optional[int] = ..., email: _Optional[_Union[RenderedEmail, _Mapping]] = ...) -> None: ...
