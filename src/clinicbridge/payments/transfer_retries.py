"""Refused transfers sent again once the provider's account can receive them.

Stripe refuses a transfer to a connected account whose ``transfers`` capability is not
active (onboarding unfinished, requirements due): the transfer is ``failed`` with
Stripe's code. Such a refusal is about the account's state (``ACCOUNT_STATE_CODES``),
not the transfer; any other (an amount above what the charge has left, say) is final.

When the account becomes able to receive transfers (``connect.apply_account`` sees the
capability go from not active to active: the ``account.updated`` webhook, or a refresh
such as the provider's return from onboarding), ``resume`` puts each such transfer of
the account back to ``submitting`` as its next attempt, in that same transaction, with
a job to send it. Stripe keeps a refused request's answer under its idempotency key
for 24 hours, so attempt n is sent with ``cb:{payment_id}:tr:v{n}``: a new key per
attempt, the same key for every try of one attempt (a crash or a retried job gets
Stripe's first answer again: exactly once). A duplicate event changes nothing: the
capability was active already, and the transfer is no longer ``failed``.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clinicbridge.audit import record_system
from clinicbridge.jobs import queue
from clinicbridge.payments.connect_models import ConnectedAccount, Transfer

RETRY_KIND = "payments.connect_transfer_retry"
RESOURCE = "transfer"
# Stripe's codes for a destination that cannot receive transfers (yet).
ACCOUNT_STATE_CODES = frozenset({"insufficient_capabilities_for_transfer", "transfers_not_allowed"})


def key_for(payment_id: str, attempt: int) -> str:
    return f"cb:{payment_id}:tr:v{attempt}"


def about_account(code: str | None) -> bool:
    return code in ACCOUNT_STATE_CODES


def resume_one(session: Session, transfer: Transfer, now: datetime) -> None:
    """The next attempt of a transfer refused for its account's state (row locked)."""
    before = transfer.failure_code
    transfer.attempt += 1
    transfer.idempotency_key = key_for(transfer.payment_id, transfer.attempt)
    transfer.status, transfer.failure_code, transfer.updated_at = "submitting", None, now
    session.flush()
    record_system(
        session, transfer.tenant_id, "transfer.retry", RESOURCE, transfer.id, now=now,
        diff={"status": ["failed", "submitting"], "attempt": transfer.attempt,
              "previous_failure_code": before},
    )  # fmt: skip
    queue.enqueue(
        session,
        RETRY_KIND,
        {"transfer_id": transfer.id},
        now=now,
        tenant_id=transfer.tenant_id,
        dedupe_key=f"{RETRY_KIND}:{transfer.id}:v{transfer.attempt}",
    )


def resume(session: Session, account: ConnectedAccount, now: datetime) -> list[str]:
    """The account can receive transfers again: resend its transfers refused for that
    reason, once each. Returns their ids."""
    refused = session.scalars(
        sa.select(Transfer)
        .where(
            Transfer.tenant_id == account.tenant_id,
            Transfer.connected_account_id == account.id,
            Transfer.status == "failed",
            Transfer.failure_code.in_(sorted(ACCOUNT_STATE_CODES)),
        )
        .order_by(Transfer.id)
        .with_for_update()
    ).all()
    for transfer in refused:
        resume_one(session, transfer, now)
    return [t.id for t in refused]
