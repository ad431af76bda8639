from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckRunRequest(_message.Message):
    __slots__ = ("account_id", "model")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    model: str
    def __init__(self, account_id: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class CheckRunResponse(_message.Message):
    __slots__ = ("allowed", "reason", "message", "balance_micros", "max_concurrent_runs", "plan_id")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RUNS_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    message: str
    balance_micros: int
    max_concurrent_runs: int
    plan_id: str
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., balance_micros: _Optional[int] = ..., max_concurrent_runs: _Optional[int] = ..., plan_id: _Optional[str] = ...) -> None: ...

class RecordUsageRequest(_message.Message):
    __slots__ = ("account_id", "run_id", "step", "model", "prompt_tokens", "completion_tokens", "cost_micros", "source", "sandbox_seconds", "cost_unknown")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    COST_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    run_id: str
    step: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_micros: int
    source: str
    sandbox_seconds: float
    cost_unknown: bool
    def __init__(self, account_id: _Optional[str] = ..., run_id: _Optional[str] = ..., step: _Optional[int] = ..., model: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_micros: _Optional[int] = ..., source: _Optional[str] = ..., sandbox_seconds: _Optional[float] = ..., cost_unknown: _Optional[bool] = ...) -> None: ...

class RecordUsageResponse(_message.Message):
    __slots__ = ("balance_micros", "charged", "may_continue", "charged_micros")
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CHARGED_FIELD_NUMBER: _ClassVar[int]
    MAY_CONTINUE_FIELD_NUMBER: _ClassVar[int]
    CHARGED_MICROS_FIELD_NUMBER: _ClassVar[int]
    balance_micros: int
    charged: bool
    may_continue: bool
    charged_micros: int
    def __init__(self, balance_micros: _Optional[int] = ..., charged: _Optional[bool] = ..., may_continue: _Optional[bool] = ..., charged_micros: _Optional[int] = ...) -> None: ...

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

class SandboxLimits(_message.Message):
    __slots__ = ("max_sandboxes", "cpu", "memory_mb", "disk_gb", "max_seconds_per_month")
    MAX_SANDBOXES_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    DISK_GB_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_PER_MONTH_FIELD_NUMBER: _ClassVar[int]
    max_sandboxes: int
    cpu: float
    memory_mb: int
    disk_gb: int
    max_seconds_per_month: int
    def __init__(self, max_sandboxes: _Optional[int] = ..., cpu: _Optional[float] = ..., memory_mb: _Optional[int] = ..., disk_gb: _Optional[int] = ..., max_seconds_per_month: _Optional[int] = ...) -> None: ...

class RateLimits(_message.Message):
    __slots__ = ("run_starts_per_minute", "requests_per_minute")
    RUN_STARTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    run_starts_per_minute: int
    requests_per_minute: int
    def __init__(self, run_starts_per_minute: _Optional[int] = ..., requests_per_minute: _Optional[int] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("id", "name", "price_micros", "monthly_credits_micros", "models", "max_concurrent_runs", "sandbox", "rate_limits", "stripe_price_id", "lookup_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_FIELD_NUMBER: _ClassVar[int]
    MONTHLY_CREDITS_MICROS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_RUNS_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    STRIPE_PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    price_micros: int
    monthly_credits_micros: int
    models: _containers.RepeatedScalarFieldContainer[str]
    max_concurrent_runs: int
    sandbox: SandboxLimits
    rate_limits: RateLimits
    stripe_price_id: str
    lookup_key: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., price_micros: _Optional[int] = ..., monthly_credits_micros: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., max_concurrent_runs: _Optional[int] = ..., sandbox: _Optional[_Union[SandboxLimits, _Mapping]] = ..., rate_limits: _Optional[_Union[RateLimits, _Mapping]] = ..., stripe_price_id: _Optional[str] = ..., lookup_key: _Optional[str] = ...) -> None: ...

class CreditPack(_message.Message):
    __slots__ = ("id", "name", "price_micros", "credits_micros", "stripe_price_id", "lookup_key")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_MICROS_FIELD_NUMBER: _ClassVar[int]
    STRIPE_PRICE_ID_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_KEY_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    price_micros: int
    credits_micros: int
    stripe_price_id: str
    lookup_key: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., price_micros: _Optional[int] = ..., credits_micros: _Optional[int] = ..., stripe_price_id: _Optional[str] = ..., lookup_key: _Optional[str] = ...) -> None: ...

class ListPlansRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPlansResponse(_message.Message):
    __slots__ = ("plans", "credit_packs", "default_plan_id", "currency")
    PLANS_FIELD_NUMBER: _ClassVar[int]
    CREDIT_PACKS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    plans: _containers.RepeatedCompositeFieldContainer[Plan]
    credit_packs: _containers.RepeatedCompositeFieldContainer[CreditPack]
    default_plan_id: str
    currency: str
    def __init__(self, plans: _Optional[_Iterable[_Union[Plan, _Mapping]]] = ..., credit_packs: _Optional[_Iterable[_Union[CreditPack, _Mapping]]] = ..., default_plan_id: _Optional[str] = ..., currency: _Optional[str] = ...) -> None: ...

class GetSubscriptionRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class GetSubscriptionResponse(_message.Message):
    __slots__ = ("plan", "status", "current_period_start", "current_period_end", "balance_micros", "cancel_at_period_end")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_AT_PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    plan: Plan
    status: str
    current_period_start: float
    current_period_end: float
    balance_micros: int
    cancel_at_period_end: bool
    def __init__(self, plan: _Optional[_Union[Plan, _Mapping]] = ..., status: _Optional[str] = ..., current_period_start: _Optional[float] = ..., current_period_end: _Optional[float] = ..., balance_micros: _Optional[int] = ..., cancel_at_period_end: _Optional[bool] = ...) -> None: ...

class ListUsageRequest(_message.Message):
    __slots__ = ("account_id", "group_by", "cursor", "limit", "since", "until")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    group_by: str
    cursor: str
    limit: int
    since: float
    until: float
    def __init__(self, account_id: _Optional[str] = ..., group_by: _Optional[str] = ..., cursor: _Optional[str] = ..., limit: _Optional[int] = ..., since: _Optional[float] = ..., until: _Optional[float] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("key", "cost_micros", "prompt_tokens", "completion_tokens", "calls", "sandbox_seconds", "first_at", "last_at")
    KEY_FIELD_NUMBER: _ClassVar[int]
    COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    SANDBOX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_AT_FIELD_NUMBER: _ClassVar[int]
    key: str
    cost_micros: int
    prompt_tokens: int
    completion_tokens: int
    calls: int
    sandbox_seconds: float
    first_at: float
    last_at: float
    def __init__(self, key: _Optional[str] = ..., cost_micros: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., calls: _Optional[int] = ..., sandbox_seconds: _Optional[float] = ..., first_at: _Optional[float] = ..., last_at: _Optional[float] = ...) -> None: ...

class ListUsageResponse(_message.Message):
    __slots__ = ("rows", "next_cursor")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    next_cursor: str
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("account_id", "amount_micros", "idempotency_key", "note", "kind")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_MICROS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    amount_micros: int
    idempotency_key: str
    note: str
    kind: str
    def __init__(self, account_id: _Optional[str] = ..., amount_micros: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., note: _Optional[str] = ..., kind: _Optional[str] = ...) -> None: ...

class GrantResponse(_message.Message):
    __slots__ = ("balance_micros", "applied")
    BALANCE_MICROS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    balance_micros: int
    applied: bool
    def __init__(self, balance_micros: _Optional[int] = ..., applied: _Optional[bool] = ...) -> None: ...

class CreateCheckoutRequest(_message.Message):
    __slots__ = ("account_id", "plan_id", "credit_pack_id", "success_url", "cancel_url")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_PACK_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_URL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_URL_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    plan_id: str
    credit_pack_id: str
    success_url: str
    cancel_url: str
    def __init__(self, account_id: _Optional[str] = ..., plan_id: _Optional[str] = ..., credit_pack_id: _Optional[str] = ..., success_url: _Optional[str] = ..., cancel_url: _Optional[str] = ...) -> None: ...

class CreateCheckoutResponse(_message.Message):
    __slots__ = ("checkout_session_id", "url")
    CHECKOUT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    checkout_session_id: str
    url: str
    def __init__(self, checkout_session_id: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class CreatePortalRequest(_message.Message):
    __slots__ = ("account_id", "return_url")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    RETURN_URL_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    return_url: str
    def __init__(self, account_id: _Optional[str] = ..., return_url: _Optional[str] = ...) -> None: ...

class CreatePortalResponse(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class HandleWebhookRequest(_message.Message):
    __slots__ = ("payload", "signature")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: str
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[str] = ...) -> None: ...

class HandleWebhookResponse(_message.Message):
    __slots__ = ("event_id", "event_type", "applied")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    applied: bool
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., applied: _Optional[bool] = ...) -> None: ...
