"""``GET /receipts/{token}``: a patient's receipt from the signed link in their e-mail
(no API key: the token is the credential; a bad or expired one is a plain 404)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from clinicbridge.api.deps import DB, clock_of
from clinicbridge.api.payments import receipt_response
from clinicbridge.core.context import Ctx
from clinicbridge.core.errors import NotFoundError
from clinicbridge.payments import receipt_links, receipts
from clinicbridge.payments.models import Payment

router = APIRouter(tags=["public"], include_in_schema=False)


@router.get("/receipts/{token}", response_class=Response)
def public_receipt(
    token: Annotated[str, Path(max_length=200)],
    request: Request,
    db: DB,
    format: Annotated[Literal["html", "pdf"], Query()] = "html",
) -> Response:
    now = clock_of(request).now()
    try:
        payment_id = receipt_links.read_token(
            receipt_links.link_key(request.app.state.settings), token, now
        )
    except receipt_links.ReceiptLinkError:
        raise NotFoundError("No resource at this address.") from None
    with db.read() as session:
        payment = session.get(Payment, payment_id)
        if payment is None:
            raise NotFoundError("No resource at this address.")
        data = receipts.receipt_for(
            session, Ctx.system(payment.tenant_id, "receipt_link", now), payment_id
        )
    response = receipt_response(data, format)
    response.headers["Cache-Control"] = "private, no-store"
    return response
