from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CheckRunRequest(_message.Message):
    __slots__ = ("account_id", "model")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    model: str
    def __init__(self, account_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class CheckRunResponse(_message.Message):
    __slots__ = ("allowed", "reason", "message", "balance_micros")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    message: str
    balance_micros: int
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., balance_micros: _Optional[int] = ...) -> None: ...

class RecordUsageRequest(_message.Message):
    __slots__ = ("account_id", "run_id", "step", "model", "prompt_tokens", "completion_tokens", "cost_micros")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    run_id: str
    step: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    def __init__(self, account_id: _Optional[str] = ..., run_id: _Optional[str] = ..., step: _Optional[int] = ..., model: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ...) -> None: ...

class RecordUsageResponse(_message.Message):
    __slots__ = ("balance_micros", "charged", "may_continue")
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    MAY_CONTINUE_FIELD_NUMBER: _ClassVar[int]
    balance_micros: int
    charged: bool
    may_continue: bool
    def __init__(self, balance_micros: _Optional[int] = ..., charged: _Optional[bool] = ..., may_continue: _Optional[bool] = ...) -> None: ...

class GetBalanceRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class GetBalanceResponse(_message.Message):
    __slots__ = ("balance_micros",)
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    balance_micros: int
    def __init__(self, balance_micros: _Optional[int] = ...) -> None: ...
