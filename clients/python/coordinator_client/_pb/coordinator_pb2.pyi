from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeleteOp(_message.Message):
    __slots__ = ["key"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ["type_url", "value"]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    value: bytes
    def __init__(self, type_url: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class ErrorStatus(_message.Message):
    __slots__ = ["code", "details", "message"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    details: _containers.RepeatedCompositeFieldContainer[ErrorDetail]
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., details: _Optional[_Iterable[_Union[ErrorDetail, _Mapping]]] = ...) -> None: ...

class ForgetReceiptsRequest(_message.Message):
    __slots__ = ["batch_ids", "incarnation", "name"]
    BATCH_IDS_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    batch_ids: _containers.RepeatedScalarFieldContainer[str]
    incarnation: int
    name: str
    def __init__(self, name: _Optional[str] = ..., incarnation: _Optional[int] = ..., batch_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ForgetReceiptsResponse(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class KeepAliveEnded(_message.Message):
    __slots__ = ["error", "incarnation", "name"]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    error: ErrorStatus
    incarnation: int
    name: str
    def __init__(self, name: _Optional[str] = ..., incarnation: _Optional[int] = ..., error: _Optional[_Union[ErrorStatus, _Mapping]] = ...) -> None: ...

class KeepAliveManyRequest(_message.Message):
    __slots__ = ["add", "remove"]
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    add: _containers.RepeatedCompositeFieldContainer[KeepAliveRequest]
    remove: _containers.RepeatedCompositeFieldContainer[KeepAliveRequest]
    def __init__(self, add: _Optional[_Iterable[_Union[KeepAliveRequest, _Mapping]]] = ..., remove: _Optional[_Iterable[_Union[KeepAliveRequest, _Mapping]]] = ...) -> None: ...

class KeepAliveManyResponse(_message.Message):
    __slots__ = ["ended", "renewed"]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    RENEWED_FIELD_NUMBER: _ClassVar[int]
    ended: _containers.RepeatedCompositeFieldContainer[KeepAliveEnded]
    renewed: _containers.RepeatedCompositeFieldContainer[KeptAlive]
    def __init__(self, renewed: _Optional[_Iterable[_Union[KeptAlive, _Mapping]]] = ..., ended: _Optional[_Iterable[_Union[KeepAliveEnded, _Mapping]]] = ...) -> None: ...

class KeepAliveRequest(_message.Message):
    __slots__ = ["incarnation", "lease_id", "name"]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    incarnation: int
    lease_id: int
    name: str
    def __init__(self, name: _Optional[str] = ..., incarnation: _Optional[int] = ..., lease_id: _Optional[int] = ...) -> None: ...

class KeepAliveResponse(_message.Message):
    __slots__ = ["ttl_seconds"]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: int
    def __init__(self, ttl_seconds: _Optional[int] = ...) -> None: ...

class KeptAlive(_message.Message):
    __slots__ = ["incarnation", "name", "ttl_seconds"]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    incarnation: int
    name: str
    ttl_seconds: int
    def __init__(self, name: _Optional[str] = ..., incarnation: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class Op(_message.Message):
    __slots__ = ["delete", "set"]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    delete: DeleteOp
    set: SetOp
    def __init__(self, set: _Optional[_Union[SetOp, _Mapping]] = ..., delete: _Optional[_Union[DeleteOp, _Mapping]] = ...) -> None: ...

class OpsRequest(_message.Message):
    __slots__ = ["limit", "page_size", "page_token"]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    limit: int
    page_size: int
    page_token: str
    def __init__(self, limit: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class OpsResponse(_message.Message):
    __slots__ = ["next_page_token", "ops", "total", "total_lower_bound", "undecodable"]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    UNDECODABLE_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    ops: _containers.RepeatedCompositeFieldContainer[PendingOp]
    total: int
    total_lower_bound: bool
    undecodable: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ops: _Optional[_Iterable[_Union[PendingOp, _Mapping]]] = ..., total: _Optional[int] = ..., undecodable: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ..., total_lower_bound: bool = ...) -> None: ...

class PendingOp(_message.Message):
    __slots__ = ["incarnation", "index", "key", "name", "op", "token", "value_bytes"]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    incarnation: int
    index: int
    key: str
    name: str
    op: str
    token: str
    value_bytes: int
    def __init__(self, token: _Optional[str] = ..., index: _Optional[int] = ..., name: _Optional[str] = ..., incarnation: _Optional[int] = ..., op: _Optional[str] = ..., key: _Optional[str] = ..., value_bytes: _Optional[int] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ["holder_host", "holder_pid", "if_absent", "name", "ttl_seconds", "wait_drained"]
    HOLDER_HOST_FIELD_NUMBER: _ClassVar[int]
    HOLDER_PID_FIELD_NUMBER: _ClassVar[int]
    IF_ABSENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WAIT_DRAINED_FIELD_NUMBER: _ClassVar[int]
    holder_host: str
    holder_pid: int
    if_absent: bool
    name: str
    ttl_seconds: int
    wait_drained: bool
    def __init__(self, name: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., if_absent: bool = ..., wait_drained: bool = ..., holder_host: _Optional[str] = ..., holder_pid: _Optional[int] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ["incarnation", "lease_id", "ttl_seconds"]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    incarnation: int
    lease_id: int
    ttl_seconds: int
    def __init__(self, incarnation: _Optional[int] = ..., lease_id: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class Registration(_message.Message):
    __slots__ = ["holder_host", "holder_pid", "incarnation", "name", "pending", "pending_lower_bound", "status", "ttl_left_seconds"]
    HOLDER_HOST_FIELD_NUMBER: _ClassVar[int]
    HOLDER_PID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    PENDING_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TTL_LEFT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    holder_host: str
    holder_pid: int
    incarnation: int
    name: str
    pending: int
    pending_lower_bound: bool
    status: str
    ttl_left_seconds: int
    def __init__(self, name: _Optional[str] = ..., incarnation: _Optional[int] = ..., status: _Optional[str] = ..., pending: _Optional[int] = ..., holder_host: _Optional[str] = ..., holder_pid: _Optional[int] = ..., ttl_left_seconds: _Optional[int] = ..., pending_lower_bound: bool = ...) -> None: ...

class RegistrationsRequest(_message.Message):
    __slots__ = ["page_size", "page_token"]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class RegistrationsResponse(_message.Message):
    __slots__ = ["next_page_token", "registrations"]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REGISTRATIONS_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    registrations: _containers.RepeatedCompositeFieldContainer[Registration]
    def __init__(self, registrations: _Optional[_Iterable[_Union[Registration, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SetOp(_message.Message):
    __slots__ = ["expiration_seconds", "key", "text", "value"]
    EXPIRATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    expiration_seconds: int
    key: str
    text: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., text: _Optional[str] = ..., expiration_seconds: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ["applied", "leader", "namespace", "pending_batches", "pending_ops", "pending_ops_lower_bound", "quarantined", "registrations", "term"]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PENDING_BATCHES_FIELD_NUMBER: _ClassVar[int]
    PENDING_OPS_FIELD_NUMBER: _ClassVar[int]
    PENDING_OPS_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    REGISTRATIONS_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    applied: str
    leader: str
    namespace: str
    pending_batches: int
    pending_ops: int
    pending_ops_lower_bound: bool
    quarantined: int
    registrations: int
    term: int
    def __init__(self, namespace: _Optional[str] = ..., leader: _Optional[str] = ..., term: _Optional[int] = ..., applied: _Optional[str] = ..., pending_batches: _Optional[int] = ..., pending_ops: _Optional[int] = ..., registrations: _Optional[int] = ..., quarantined: _Optional[int] = ..., pending_ops_lower_bound: bool = ...) -> None: ...

class StreamResult(_message.Message):
    __slots__ = ["error", "request_id", "submitted"]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_FIELD_NUMBER: _ClassVar[int]
    error: ErrorStatus
    request_id: int
    submitted: SubmitResponse
    def __init__(self, request_id: _Optional[int] = ..., submitted: _Optional[_Union[SubmitResponse, _Mapping]] = ..., error: _Optional[_Union[ErrorStatus, _Mapping]] = ...) -> None: ...

class StreamSubmission(_message.Message):
    __slots__ = ["request_id", "submit", "timeout_ms"]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    submit: SubmitRequest
    timeout_ms: int
    def __init__(self, request_id: _Optional[int] = ..., submit: _Optional[_Union[SubmitRequest, _Mapping]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ["batch_id", "incarnation", "lease_id", "name", "ops"]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    incarnation: int
    lease_id: int
    name: str
    ops: _containers.RepeatedCompositeFieldContainer[Op]
    def __init__(self, name: _Optional[str] = ..., incarnation: _Optional[int] = ..., batch_id: _Optional[str] = ..., ops: _Optional[_Iterable[_Union[Op, _Mapping]]] = ..., lease_id: _Optional[int] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ["batch_id", "token"]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    token: str
    def __init__(self, token: _Optional[str] = ..., batch_id: _Optional[str] = ...) -> None: ...

class SubmitStreamRequest(_message.Message):
    __slots__ = ["submissions"]
    SUBMISSIONS_FIELD_NUMBER: _ClassVar[int]
    submissions: _containers.RepeatedCompositeFieldContainer[StreamSubmission]
    def __init__(self, submissions: _Optional[_Iterable[_Union[StreamSubmission, _Mapping]]] = ...) -> None: ...

class SubmitStreamResponse(_message.Message):
    __slots__ = ["results"]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StreamResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StreamResult, _Mapping]]] = ...) -> None: ...

class UnregisterRequest(_message.Message):
    __slots__ = ["incarnation", "lease_id", "name"]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    incarnation: int
    lease_id: int
    name: str
    def __init__(self, name: _Optional[str] = ..., incarnation: _Optional[int] = ..., lease_id: _Optional[int] = ...) -> None: ...

class UnregisterResponse(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class WaitAppliedRequest(_message.Message):
    __slots__ = ["timeout_ms", "token"]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    timeout_ms: int
    token: str
    def __init__(self, token: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class WaitAppliedResponse(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...
