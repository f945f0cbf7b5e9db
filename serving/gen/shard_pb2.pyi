from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExpandRequest(_message.Message):
    __slots__ = ("feature_ids", "feature_values", "parents", "parent_scores", "top_k", "beam_size", "model_version", "request_id")
    FEATURE_IDS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_VALUES_FIELD_NUMBER: _ClassVar[int]
    PARENTS_FIELD_NUMBER: _ClassVar[int]
    PARENT_SCORES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    feature_ids: _containers.RepeatedScalarFieldContainer[int]
    feature_values: _containers.RepeatedScalarFieldContainer[float]
    parents: _containers.RepeatedScalarFieldContainer[int]
    parent_scores: _containers.RepeatedScalarFieldContainer[float]
    top_k: int
    beam_size: int
    model_version: str
    request_id: str
    def __init__(self, feature_ids: _Optional[_Iterable[int]] = ..., feature_values: _Optional[_Iterable[float]] = ..., parents: _Optional[_Iterable[int]] = ..., parent_scores: _Optional[_Iterable[float]] = ..., top_k: _Optional[int] = ..., beam_size: _Optional[int] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class ShardHit(_message.Message):
    __slots__ = ("label_id", "score", "parent_rank", "label", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABEL_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PARENT_RANK_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    label_id: int
    score: float
    parent_rank: int
    label: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, label_id: _Optional[int] = ..., score: _Optional[float] = ..., parent_rank: _Optional[int] = ..., label: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ExpandResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[ShardHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[ShardHit, _Mapping]]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("shard", "nr_shards", "model_version", "nr_labels")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    NR_SHARDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NR_LABELS_FIELD_NUMBER: _ClassVar[int]
    shard: int
    nr_shards: int
    model_version: str
    nr_labels: int
    def __init__(self, shard: _Optional[int] = ..., nr_shards: _Optional[int] = ..., model_version: _Optional[str] = ..., nr_labels: _Optional[int] = ...) -> None: ...
