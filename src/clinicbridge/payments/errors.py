"""The payments subtree of ClinicBridge's errors (``core.errors``), as problem types:

ClinicBridgeError
├── ExternalServiceError
│   ├── PaymentProviderUnavailableError  503 payment-provider-unavailable (retry later)
│   └── StripeRefusedError               502 stripe-refused (Stripe said no; not retryable)
├── CardDeclinedError                    402 card-declined (decline code, never the card)
├── ConflictError                        409
│   ├── PaymentStateError                    payment-state
│   ├── ChargeDisputedError                  charge-disputed
│   ├── InvoiceStateError                    invoice-state
│   └── RefundStateError                     refund-state
└── SelfApprovalError                    403 self-approval (two-person rule)

Messages name what was wrong (a field, a Stripe error code), never a value.
"""

from __future__ import annotations

from clinicbridge.core.errors import ClinicBridgeError, ConflictError, ExternalServiceError


class PaymentProviderUnavailableError(ExternalServiceError):
    """Stripe could not be reached (breaker open, 5xx, timeout, 429). Nothing was charged
    twice: the retry reuses the same idempotency key."""

    status = 503
    type_slug = "payment-provider-unavailable"
    title = "Payment provider unavailable"

    def __init__(
        self,
        detail: str,
        *,
        integration: str,
        retry_after: float | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail, integration=integration, retry_after=retry_after)
        self.extra = dict(extra or {})

    def problem_extra(self) -> dict[str, object]:
        return {**self.extra, "retryable": True}


class StripeRefusedError(ExternalServiceError):
    """Stripe refused a request for a reason of its own (``code``, ``param``)."""

    type_slug = "stripe-refused"
    title = "Stripe refused the request"

    def __init__(
        self,
        detail: str,
        *,
        integration: str,
        status_code: int | None,
        code: str | None,
        param: str | None,
    ) -> None:
        super().__init__(detail, integration=integration, status_code=status_code, retryable=False)
        self.code, self.param = code, param

    def problem_extra(self) -> dict[str, object]:
        return {"stripe_code": self.code, "stripe_param": self.param}


class CardDeclinedError(ClinicBridgeError):
    status = 402
    type_slug = "card-declined"
    title = "Card declined"
    retryable = False

    def __init__(self, code: str | None, decline_code: str | None) -> None:
        super().__init__("The card was declined" + (f" ({decline_code or code})." if code else "."))
        self.code, self.decline_code = code, decline_code

    def problem_extra(self) -> dict[str, object]:
        return {"code": self.code, "decline_code": self.decline_code}


class PaymentStateError(ConflictError):
    type_slug = "payment-state"
    title = "Not possible in this payment's state"


class ChargeDisputedError(ConflictError):
    type_slug = "charge-disputed"
    title = "The charge is disputed"


class InvoiceStateError(ConflictError):
    type_slug = "invoice-state"
    title = "Not possible in this invoice's state"


class RefundStateError(ConflictError):
    type_slug = "refund-state"
    title = "Not possible in this refund's state"


class SelfApprovalError(ClinicBridgeError):
    status = 403
    type_slug = "self-approval"
    title = "A second person must approve"
    retryable = False
