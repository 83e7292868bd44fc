from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HelloRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ("node", "epoch", "last", "acked", "refused")
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    node: str
    epoch: str
    last: int
    acked: int
    refused: int
    def __init__(self, node: _Optional[str] = ..., epoch: _Optional[str] = ..., last: _Optional[int] = ..., acked: _Optional[int] = ..., refused: _Optional[int] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("epoch", "after", "max_records")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    after: int
    max_records: int
    def __init__(self, epoch: _Optional[str] = ..., after: _Optional[int] = ..., max_records: _Optional[int] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("seq", "kind", "data")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    seq: int
    kind: str
    data: str
    def __init__(self, seq: _Optional[int] = ..., kind: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...

class Batch(_message.Message):
    __slots__ = ("node", "epoch", "records", "last", "refused")
    NODE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    node: str
    epoch: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    last: int
    refused: int
    def __init__(self, node: _Optional[str] = ..., epoch: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., last: _Optional[int] = ..., refused: _Optional[int] = ...) -> None: ...

class AckRequest(_message.Message):
    __slots__ = ("epoch", "seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: str
    seq: int
    def __init__(self, epoch: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class AckResponse(_message.Message):
    __slots__ = ("acked",)
    ACKED_FIELD_NUMBER: _ClassVar[int]
    acked: int
    def __init__(self, acked: _Optional[int] = ...) -> None: ...
