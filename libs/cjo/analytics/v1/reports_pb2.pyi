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

class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANULARITY_UNSPECIFIED: _ClassVar[Granularity]
    GRANULARITY_HOUR: _ClassVar[Granularity]
    GRANULARITY_DAY: _ClassVar[Granularity]

class ExperimentKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_KIND_UNSPECIFIED: _ClassVar[ExperimentKind]
    EXPERIMENT_KIND_JOURNEY_SPLIT: _ClassVar[ExperimentKind]
    EXPERIMENT_KIND_CONTENT_VARIANT: _ClassVar[ExperimentKind]

class AttributionModel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTRIBUTION_MODEL_UNSPECIFIED: _ClassVar[AttributionModel]
    ATTRIBUTION_MODEL_FIRST_TOUCH: _ClassVar[AttributionModel]
    ATTRIBUTION_MODEL_LAST_TOUCH: _ClassVar[AttributionModel]
    ATTRIBUTION_MODEL_LINEAR: _ClassVar[AttributionModel]
    ATTRIBUTION_MODEL_TIME_DECAY: _ClassVar[AttributionModel]
    ATTRIBUTION_MODEL_POSITION_BASED: _ClassVar[AttributionModel]
    ATTRIBUTION_MODEL_DATA_DRIVEN: _ClassVar[AttributionModel]
GRANULARITY_UNSPECIFIED: Granularity
GRANULARITY_HOUR: Granularity
GRANULARITY_DAY: Granularity
EXPERIMENT_KIND_UNSPECIFIED: ExperimentKind
EXPERIMENT_KIND_JOURNEY_SPLIT: ExperimentKind
EXPERIMENT_KIND_CONTENT_VARIANT: ExperimentKind
ATTRIBUTION_MODEL_UNSPECIFIED: AttributionModel
ATTRIBUTION_MODEL_FIRST_TOUCH: AttributionModel
ATTRIBUTION_MODEL_LAST_TOUCH: AttributionModel
ATTRIBUTION_MODEL_LINEAR: AttributionModel
ATTRIBUTION_MODEL_TIME_DECAY: AttributionModel
ATTRIBUTION_MODEL_POSITION_BASED: AttributionModel
ATTRIBUTION_MODEL_DATA_DRIVEN: AttributionModel

class TimeWindow(_message.Message):
    __slots__ = ("start_time", "end_time")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetJourneyFunnelRequest(_message.Message):
    __slots__ = ("journey", "journey_version", "granularity", "window")
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    journey: str
    journey_version: int
    granularity: Granularity
    window: TimeWindow
    def __init__(self, journey: _Optional[str] = ..., journey_version: _Optional[int] = ..., granularity: _Optional[_Union[Granularity, str]] = ..., window: _Optional[_Union[TimeWindow, _Mapping]] = ...) -> None: ...

class NodeFunnel(_message.Message):
    __slots__ = ("node_id", "entered", "completed", "in_progress", "dropped", "failed", "held_out")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERED_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    entered: int
    completed: int
    in_progress: int
    dropped: int
    failed: int
    held_out: int
    def __init__(self, node_id: _Optional[str] = ..., entered: _Optional[int] = ..., completed: _Optional[int] = ..., in_progress: _Optional[int] = ..., dropped: _Optional[int] = ..., failed: _Optional[int] = ..., held_out: _Optional[int] = ...) -> None: ...

class FunnelBucket(_message.Message):
    __slots__ = ("start_time", "entered", "conversions", "revenue", "exited")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    ENTERED_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    entered: int
    conversions: int
    revenue: float
    exited: int
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entered: _Optional[int] = ..., conversions: _Optional[int] = ..., revenue: _Optional[float] = ..., exited: _Optional[int] = ...) -> None: ...

class VersionFunnel(_message.Message):
    __slots__ = ("journey_version", "entered_profiles", "converted_profiles", "conversion_rate", "revenue", "exited", "nodes", "series")
    JOURNEY_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTERED_PROFILES_FIELD_NUMBER: _ClassVar[int]
    CONVERTED_PROFILES_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_RATE_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    EXITED_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    journey_version: int
    entered_profiles: int
    converted_profiles: int
    conversion_rate: float
    revenue: float
    exited: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeFunnel]
    series: _containers.RepeatedCompositeFieldContainer[FunnelBucket]
    def __init__(self, journey_version: _Optional[int] = ..., entered_profiles: _Optional[int] = ..., converted_profiles: _Optional[int] = ..., conversion_rate: _Optional[float] = ..., revenue: _Optional[float] = ..., exited: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeFunnel, _Mapping]]] = ..., series: _Optional[_Iterable[_Union[FunnelBucket, _Mapping]]] = ...) -> None: ...

class GetJourneyFunnelResponse(_message.Message):
    __slots__ = ("journey", "versions")
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    journey: str
    versions: _containers.RepeatedCompositeFieldContainer[VersionFunnel]
    def __init__(self, journey: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[VersionFunnel, _Mapping]]] = ...) -> None: ...

class GetChannelPerformanceRequest(_message.Message):
    __slots__ = ("journey", "window")
    JOURNEY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    journey: str
    window: TimeWindow
    def __init__(self, journey: _Optional[str] = ..., window: _Optional[_Union[TimeWindow, _Mapping]] = ...) -> None: ...

class MessageOutcomes(_message.Message):
    __slots__ = ("sent", "delivered", "opened", "clicked", "bounced", "unsubscribed", "delivery_rate", "open_rate", "click_rate", "click_to_open_rate", "bounce_rate", "unsubscribe_rate")
    SENT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    OPENED_FIELD_NUMBER: _ClassVar[int]
    CLICKED_FIELD_NUMBER: _ClassVar[int]
    BOUNCED_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_RATE_FIELD_NUMBER: _ClassVar[int]
    OPEN_RATE_FIELD_NUMBER: _ClassVar[int]
    CLICK_RATE_FIELD_NUMBER: _ClassVar[int]
    CLICK_TO_OPEN_RATE_FIELD_NUMBER: _ClassVar[int]
    BOUNCE_RATE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_RATE_FIELD_NUMBER: _ClassVar[int]
    sent: int
    delivered: int
    opened: int
    clicked: int
    bounced: int
    unsubscribed: int
    delivery_rate: float
    open_rate: float
    click_rate: float
    click_to_open_rate: float
    bounce_rate: float
    unsubscribe_rate: float
    def __init__(self, sent: _Optional[int] = ..., delivered: _Optional[int] = ..., opened: _Optional[int] = ..., clicked: _Optional[int] = ..., bounced: _Optional[int] = ..., unsubscribed: _Optional[int] = ..., delivery_rate: _Optional[float] = ..., open_rate: _Optional[float] = ..., click_rate: _Optional[float] = ..., click_to_open_rate: _Optional[float] = ..., bounce_rate: _Optional[float] = ..., unsubscribe_rate: _Optional[float] = ...) -> None: ...

class ChannelOutcomes(_message.Message):
    __slots__ = ("channel", "outcomes")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    outcomes: MessageOutcomes
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., outcomes: _Optional[_Union[MessageOutcomes, _Mapping]] = ...) -> None: ...

class ContentOutcomes(_message.Message):
    __slots__ = ("channel", "content_key", "outcomes")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    content_key: str
    outcomes: MessageOutcomes
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., content_key: _Optional[str] = ..., outcomes: _Optional[_Union[MessageOutcomes, _Mapping]] = ...) -> None: ...

class VariantOutcomes(_message.Message):
    __slots__ = ("channel", "content_key", "variant", "outcomes")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    content_key: str
    variant: str
    outcomes: MessageOutcomes
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., content_key: _Optional[str] = ..., variant: _Optional[str] = ..., outcomes: _Optional[_Union[MessageOutcomes, _Mapping]] = ...) -> None: ...

class GetChannelPerformanceResponse(_message.Message):
    __slots__ = ("channels", "content_items", "variants")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedCompositeFieldContainer[ChannelOutcomes]
    content_items: _containers.RepeatedCompositeFieldContainer[ContentOutcomes]
    variants: _containers.RepeatedCompositeFieldContainer[VariantOutcomes]
    def __init__(self, channels: _Optional[_Iterable[_Union[ChannelOutcomes, _Mapping]]] = ..., content_items: _Optional[_Iterable[_Union[ContentOutcomes, _Mapping]]] = ..., variants: _Optional[_Iterable[_Union[VariantOutcomes, _Mapping]]] = ...) -> None: ...

class GetExperimentResultsRequest(_message.Message):
    __slots__ = ("experiment_id", "expected_weights", "control_arm")
    class ExpectedWeightsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ARM_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    expected_weights: _containers.ScalarMap[str, float]
    control_arm: str
    def __init__(self, experiment_id: _Optional[str] = ..., expected_weights: _Optional[_Mapping[str, float]] = ..., control_arm: _Optional[str] = ...) -> None: ...

class Interval(_message.Message):
    __slots__ = ("lower", "upper")
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    lower: float
    upper: float
    def __init__(self, lower: _Optional[float] = ..., upper: _Optional[float] = ...) -> None: ...

class ArmResult(_message.Message):
    __slots__ = ("arm", "control", "exposures", "conversions", "conversion_rate", "revenue", "absolute_lift", "absolute_lift_ci", "relative_lift", "relative_lift_ci", "p_value", "probability_to_beat_control", "expected_share", "revenue_per_exposure", "revenue_per_exposure_lift", "revenue_per_exposure_lift_ci", "revenue_p_value", "revenue_degrees_of_freedom")
    ARM_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    CONVERSION_RATE_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_LIFT_FIELD_NUMBER: _ClassVar[int]
    ABSOLUTE_LIFT_CI_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_LIFT_CI_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_TO_BEAT_CONTROL_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHARE_FIELD_NUMBER: _ClassVar[int]
    REVENUE_PER_EXPOSURE_FIELD_NUMBER: _ClassVar[int]
    REVENUE_PER_EXPOSURE_LIFT_FIELD_NUMBER: _ClassVar[int]
    REVENUE_PER_EXPOSURE_LIFT_CI_FIELD_NUMBER: _ClassVar[int]
    REVENUE_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    REVENUE_DEGREES_OF_FREEDOM_FIELD_NUMBER: _ClassVar[int]
    arm: str
    control: bool
    exposures: int
    conversions: int
    conversion_rate: float
    revenue: float
    absolute_lift: float
    absolute_lift_ci: Interval
    relative_lift: float
    relative_lift_ci: Interval
    p_value: float
    probability_to_beat_control: float
    expected_share: float
    revenue_per_exposure: float
    revenue_per_exposure_lift: float
    revenue_per_exposure_lift_ci: Interval
    revenue_p_value: float
    revenue_degrees_of_freedom: float
    def __init__(self, arm: _Optional[str] = ..., control: _Optional[bool] = ..., exposures: _Optional[int] = ..., conversions: _Optional[int] = ..., conversion_rate: _Optional[float] = ..., revenue: _Optional[float] = ..., absolute_lift: _Optional[float] = ..., absolute_lift_ci: _Optional[_Union[Interval, _Mapping]] = ..., relative_lift: _Optional[float] = ..., relative_lift_ci: _Optional[_Union[Interval, _Mapping]] = ..., p_value: _Optional[float] = ..., probability_to_beat_control: _Optional[float] = ..., expected_share: _Optional[float] = ..., revenue_per_exposure: _Optional[float] = ..., revenue_per_exposure_lift: _Optional[float] = ..., revenue_per_exposure_lift_ci: _Optional[_Union[Interval, _Mapping]] = ..., revenue_p_value: _Optional[float] = ..., revenue_degrees_of_freedom: _Optional[float] = ...) -> None: ...

class SampleRatioCheck(_message.Message):
    __slots__ = ("chi_square", "degrees_of_freedom", "p_value", "mismatch", "warning")
    CHI_SQUARE_FIELD_NUMBER: _ClassVar[int]
    DEGREES_OF_FREEDOM_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    chi_square: float
    degrees_of_freedom: int
    p_value: float
    mismatch: bool
    warning: str
    def __init__(self, chi_square: _Optional[float] = ..., degrees_of_freedom: _Optional[int] = ..., p_value: _Optional[float] = ..., mismatch: _Optional[bool] = ..., warning: _Optional[str] = ...) -> None: ...

class Incrementality(_message.Message):
    __slots__ = ("incremental_conversions", "incremental_revenue", "incrementality")
    INCREMENTAL_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    INCREMENTAL_REVENUE_FIELD_NUMBER: _ClassVar[int]
    INCREMENTALITY_FIELD_NUMBER: _ClassVar[int]
    incremental_conversions: float
    incremental_revenue: float
    incrementality: float
    def __init__(self, incremental_conversions: _Optional[float] = ..., incremental_revenue: _Optional[float] = ..., incrementality: _Optional[float] = ...) -> None: ...

class GetExperimentResultsResponse(_message.Message):
    __slots__ = ("experiment_id", "control_arm", "arms", "sample_ratio", "incrementality", "currency", "currency_warning")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTROL_ARM_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    INCREMENTALITY_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_WARNING_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    control_arm: str
    arms: _containers.RepeatedCompositeFieldContainer[ArmResult]
    sample_ratio: SampleRatioCheck
    incrementality: Incrementality
    currency: str
    currency_warning: str
    def __init__(self, experiment_id: _Optional[str] = ..., control_arm: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[ArmResult, _Mapping]]] = ..., sample_ratio: _Optional[_Union[SampleRatioCheck, _Mapping]] = ..., incrementality: _Optional[_Union[Incrementality, _Mapping]] = ..., currency: _Optional[str] = ..., currency_warning: _Optional[str] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ExperimentArm(_message.Message):
    __slots__ = ("arm", "control", "weight")
    ARM_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    arm: str
    control: bool
    weight: float
    def __init__(self, arm: _Optional[str] = ..., control: _Optional[bool] = ..., weight: _Optional[float] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("experiment_id", "kind", "journey_id", "node_id", "content_key", "arms", "first_exposure_time", "last_exposure_time", "exposures")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    FIRST_EXPOSURE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_EXPOSURE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    kind: ExperimentKind
    journey_id: str
    node_id: str
    content_key: str
    arms: _containers.RepeatedCompositeFieldContainer[ExperimentArm]
    first_exposure_time: _timestamp_pb2.Timestamp
    last_exposure_time: _timestamp_pb2.Timestamp
    exposures: int
    def __init__(self, experiment_id: _Optional[str] = ..., kind: _Optional[_Union[ExperimentKind, str]] = ..., journey_id: _Optional[str] = ..., node_id: _Optional[str] = ..., content_key: _Optional[str] = ..., arms: _Optional[_Iterable[_Union[ExperimentArm, _Mapping]]] = ..., first_exposure_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_exposure_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exposures: _Optional[int] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAttributionRequest(_message.Message):
    __slots__ = ("window", "lookback_days", "models", "half_life_hours", "include_conversions")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    LOOKBACK_DAYS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    HALF_LIFE_HOURS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    window: TimeWindow
    lookback_days: int
    models: _containers.RepeatedScalarFieldContainer[AttributionModel]
    half_life_hours: float
    include_conversions: bool
    def __init__(self, window: _Optional[_Union[TimeWindow, _Mapping]] = ..., lookback_days: _Optional[int] = ..., models: _Optional[_Iterable[_Union[AttributionModel, str]]] = ..., half_life_hours: _Optional[float] = ..., include_conversions: _Optional[bool] = ...) -> None: ...

class Credit(_message.Message):
    __slots__ = ("channel", "key", "conversions", "revenue")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    channel: _common_pb2.Channel
    key: str
    conversions: float
    revenue: float
    def __init__(self, channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., key: _Optional[str] = ..., conversions: _Optional[float] = ..., revenue: _Optional[float] = ...) -> None: ...

class Touchpoint(_message.Message):
    __slots__ = ("message_id", "channel", "journey_id", "content_key", "occur_time", "share", "revenue")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    JOURNEY_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_KEY_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    channel: _common_pb2.Channel
    journey_id: str
    content_key: str
    occur_time: _timestamp_pb2.Timestamp
    share: float
    revenue: float
    def __init__(self, message_id: _Optional[str] = ..., channel: _Optional[_Union[_common_pb2.Channel, str]] = ..., journey_id: _Optional[str] = ..., content_key: _Optional[str] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., share: _Optional[float] = ..., revenue: _Optional[float] = ...) -> None: ...

class AttributedConversion(_message.Message):
    __slots__ = ("fact_id", "profile_id", "occur_time", "revenue", "touchpoints")
    FACT_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_ID_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    TOUCHPOINTS_FIELD_NUMBER: _ClassVar[int]
    fact_id: str
    profile_id: str
    occur_time: _timestamp_pb2.Timestamp
    revenue: float
    touchpoints: _containers.RepeatedCompositeFieldContainer[Touchpoint]
    def __init__(self, fact_id: _Optional[str] = ..., profile_id: _Optional[str] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revenue: _Optional[float] = ..., touchpoints: _Optional[_Iterable[_Union[Touchpoint, _Mapping]]] = ...) -> None: ...

class ModelAttribution(_message.Message):
    __slots__ = ("model", "channels", "journeys", "content_items", "conversions")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    JOURNEYS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ITEMS_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    model: AttributionModel
    channels: _containers.RepeatedCompositeFieldContainer[Credit]
    journeys: _containers.RepeatedCompositeFieldContainer[Credit]
    content_items: _containers.RepeatedCompositeFieldContainer[Credit]
    conversions: _containers.RepeatedCompositeFieldContainer[AttributedConversion]
    def __init__(self, model: _Optional[_Union[AttributionModel, str]] = ..., channels: _Optional[_Iterable[_Union[Credit, _Mapping]]] = ..., journeys: _Optional[_Iterable[_Union[Credit, _Mapping]]] = ..., content_items: _Optional[_Iterable[_Union[Credit, _Mapping]]] = ..., conversions: _Optional[_Iterable[_Union[AttributedConversion, _Mapping]]] = ...) -> None: ...

class GetAttributionResponse(_message.Message):
    __slots__ = ("conversions", "attributed_conversions", "attributed_revenue", "models", "unattributed_conversions", "unattributed_revenue")
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTED_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTED_REVENUE_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    UNATTRIBUTED_CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    UNATTRIBUTED_REVENUE_FIELD_NUMBER: _ClassVar[int]
    conversions: int
    attributed_conversions: int
    attributed_revenue: float
    models: _containers.RepeatedCompositeFieldContainer[ModelAttribution]
    unattributed_conversions: int
    unattributed_revenue: float
    def __init__(self, conversions: _Optional[int] = ..., attributed_conversions: _Optional[int] = ..., attributed_revenue: _Optional[float] = ..., models: _Optional[_Iterable[_Union[ModelAttribution, _Mapping]]] = ..., unattributed_conversions: _Optional[int] = ..., unattributed_revenue: _Optional[float] = ...) -> None: ...
