"""Payments: the patient ledger, tax rates, invoices, receipts, refunds, and pay at
booking through Stripe (PaymentIntents and Checkout Sessions), provider payouts with
Stripe Connect (``connect``, ``transfers``) and card payments at the front desk with
Stripe Terminal (``terminal``).

Stripe is reached only through ``payments.stripe_api`` (the outbound client of the
clinic's ``stripe`` integration) and ``payments.stripe_connect``, built on its helpers;
its webhooks arrive through the verified inbox and are handled in
``payments.stripe_events`` (and ``connect``, ``terminal``, ``transfers``).
"""
