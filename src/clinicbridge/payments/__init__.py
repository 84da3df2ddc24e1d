"""Payments: the patient ledger, tax rates, invoices, receipts, refunds, and pay at
booking through Stripe (PaymentIntents and Checkout Sessions).

Stripe is reached only through ``payments.stripe_api`` (the outbound client of the
clinic's ``stripe`` integration); its webhooks arrive through the verified inbox and
are handled in ``payments.stripe_events``.
"""
