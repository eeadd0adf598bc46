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
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("name", "channel", "context")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    name: str
    channel: _common_pb2.Channel
    context: RenderContext
    def __init__(self, name: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., context: _Optional[_Union[RenderContext, _Mapping]] = ...) -> None: ...

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
