from cjo.common.v1 import common_pb2 as _common_pb2
from cjo.content.v1 import content_item_pb2 as _content_item_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateContentItemRequest(_message.Message):
    __slots__ = ("content_item", "request_id")
    CONTENT_ITEM_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    content_item: _content_item_pb2.ContentItem
    request_id: str
    def __init__(self, content_item: _Optional[_Union[_content_item_pb2.ContentItem, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateContentItemResponse(_message.Message):
    __slots__ = ("content_item",)
    CONTENT_ITEM_FIELD_NUMBER: _ClassVar[int]
    content_item: _content_item_pb2.ContentItem
    def __init__(self, content_item: _Optional[_Union[_content_item_pb2.ContentItem, _Mapping]] = ...) -> None: ...

class GetContentItemRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetContentItemResponse(_message.Message):
    __slots__ = ("content_item",)
    CONTENT_ITEM_FIELD_NUMBER: _ClassVar[int]
    content_item: _content_item_pb2.ContentItem
    def __init__(self, content_item: _Optional[_Union[_content_item_pb2.ContentItem, _Mapping]] = ...) -> None: ...

class ListContentItemsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "tag")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    tag: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., tag: _Optional[str] = ...) -> None: ...

class ListContentItemsResponse(_message.Message):
    __slots__ = ("content_items", "next_page_token")
    CONTENT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    content_items: _containers.RepeatedCompositeFieldContainer[_content_item_pb2.ContentItem]
    next_page_token: str
    def __init__(self, content_items: _Optional[_Iterable[_Union[_content_item_pb2.ContentItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateContentItemRequest(_message.Message):
    __slots__ = ("content_item", "update_mask", "request_id")
    CONTENT_ITEM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    content_item: _content_item_pb2.ContentItem
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, content_item: _Optional[_Union[_content_item_pb2.ContentItem, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateContentItemResponse(_message.Message):
    __slots__ = ("content_item",)
    CONTENT_ITEM_FIELD_NUMBER: _ClassVar[int]
    content_item: _content_item_pb2.ContentItem
    def __init__(self, content_item: _Optional[_Union[_content_item_pb2.ContentItem, _Mapping]] = ...) -> None: ...

class DeleteContentItemRequest(_message.Message):
    __slots__ = ("name", "etag", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteContentItemResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenderContext(_message.Message):
    __slots__ = ("profile_id", "traits", "event", "variables")
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    profile_id: str
    traits: _struct_pb2.Struct
    event: _struct_pb2.Struct
    variables: _struct_pb2.Struct
    def __init__(self, profile_id: _Optional[str] = ..., traits: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., event: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., variables: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class RenderContentRequest(_message.Message):
    __slots__ = ("name", "channel", "context", "version", "locale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    channel: _common_pb2.Channel
    context: RenderContext
    version: int
    locale: str
    def __init__(self, name: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., context: _Optional[_Union[RenderContext, _Mapping]] = ..., version: _Optional[int] = ..., locale: _Optional[str] = ...) -> None: ...

class RenderContentResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _common_pb2.RenderedMessage
    def __init__(self, message: _Optional[_Union[_common_pb2.RenderedMessage, _Mapping]] = ...) -> None: ...

class BatchRenderContentRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[RenderContentRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[RenderContentRequest, _Mapping]]] = ...) -> None: ...

class BatchRenderContentResult(_message.Message):
    __slots__ = ("status", "message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: _status_pb2.Status
    message: _common_pb2.RenderedMessage
    def __init__(self, status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., message: _Optional[_Union[_common_pb2.RenderedMessage, _Mapping]] = ...) -> None: ...

class BatchRenderContentResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchRenderContentResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchRenderContentResult, _Mapping]]] = ...) -> None: ...

class PublishContentItemRequest(_message.Message):
    __slots__ = ("name", "etag", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class PublishContentItemResponse(_message.Message):
    __slots__ = ("content_version",)
    CONTENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    content_version: _content_item_pb2.ContentVersion
    def __init__(self, content_version: _Optional[_Union[_content_item_pb2.ContentVersion, _Mapping]] = ...) -> None: ...

class RollbackContentItemRequest(_message.Message):
    __slots__ = ("name", "version", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    request_id: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., request_id: _Optional[str] = ...) -> None: ...

class RollbackContentItemResponse(_message.Message):
    __slots__ = ("content_version",)
    CONTENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    content_version: _content_item_pb2.ContentVersion
    def __init__(self, content_version: _Optional[_Union[_content_item_pb2.ContentVersion, _Mapping]] = ...) -> None: ...

class ListContentItemVersionsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListContentItemVersionsResponse(_message.Message):
    __slots__ = ("content_versions", "next_page_token")
    CONTENT_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    content_versions: _containers.RepeatedCompositeFieldContainer[_content_item_pb2.ContentVersion]
    next_page_token: str
    def __init__(self, content_versions: _Optional[_Iterable[_Union[_content_item_pb2.ContentVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PreviewContentRequest(_message.Message):
    __slots__ = ("name", "channel", "context", "locale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    channel: _common_pb2.Channel
    context: RenderContext
    locale: str
    def __init__(self, name: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., context: _Optional[_Union[RenderContext, _Mapping]] = ..., locale: _Optional[str] = ...) -> None: ...

class PreviewContentResponse(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: _common_pb2.RenderedMessage
    def __init__(self, message: _Optional[_Union[_common_pb2.RenderedMessage, _Mapping]] = ...) -> None: ...

class CreateSnippetRequest(_message.Message):
    __slots__ = ("snippet", "request_id")
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    snippet: _content_item_pb2.Snippet
    request_id: str
    def __init__(self, snippet: _Optional[_Union[_content_item_pb2.Snippet, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateSnippetResponse(_message.Message):
    __slots__ = ("snippet",)
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    snippet: _content_item_pb2.Snippet
    def __init__(self, snippet: _Optional[_Union[_content_item_pb2.Snippet, _Mapping]] = ...) -> None: ...

class GetSnippetRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetSnippetResponse(_message.Message):
    __slots__ = ("snippet",)
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    snippet: _content_item_pb2.Snippet
    def __init__(self, snippet: _Optional[_Union[_content_item_pb2.Snippet, _Mapping]] = ...) -> None: ...

class ListSnippetsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSnippetsResponse(_message.Message):
    __slots__ = ("snippets", "next_page_token")
    SNIPPETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    snippets: _containers.RepeatedCompositeFieldContainer[_content_item_pb2.Snippet]
    next_page_token: str
    def __init__(self, snippets: _Optional[_Iterable[_Union[_content_item_pb2.Snippet, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateSnippetRequest(_message.Message):
    __slots__ = ("snippet", "request_id")
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    snippet: _content_item_pb2.Snippet
    request_id: str
    def __init__(self, snippet: _Optional[_Union[_content_item_pb2.Snippet, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateSnippetResponse(_message.Message):
    __slots__ = ("snippet",)
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    snippet: _content_item_pb2.Snippet
    def __init__(self, snippet: _Optional[_Union[_content_item_pb2.Snippet, _Mapping]] = ...) -> None: ...

class DeleteSnippetRequest(_message.Message):
    __slots__ = ("name", "etag", "request_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    request_id: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeleteSnippetResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetContentSettingsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetContentSettingsResponse(_message.Message):
    __slots__ = ("content_settings",)
    CONTENT_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    content_settings: _content_item_pb2.ContentSettings
    def __init__(self, content_settings: _Optional[_Union[_content_item_pb2.ContentSettings, _Mapping]] = ...) -> None: ...

class UpdateContentSettingsRequest(_message.Message):
    __slots__ = ("content_settings", "update_mask", "request_id")
    CONTENT_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    content_settings: _content_item_pb2.ContentSettings
    update_mask: _field_mask_pb2.FieldMask
    request_id: str
    def __init__(self, content_settings: _Optional[_Union[_content_item_pb2.ContentSettings, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class UpdateContentSettingsResponse(_message.Message):
    __slots__ = ("content_settings",)
    CONTENT_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    content_settings: _content_item_pb2.ContentSettings
    def __init__(self, content_settings: _Optional[_Union[_content_item_pb2.ContentSettings, _Mapping]] = ...) -> None: ...
