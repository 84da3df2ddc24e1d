"""Seal + open of one credential set (4 fields) through the vault vs raw AES-GCM.

The vault runs warm (the clinic's data key unwrapped and cached), as it does
in a serving process. Baseline in the same run: AESGCM encrypt + decrypt of
the same 4 plaintexts with the same associated data, no format, no Secret, no
lookups. Samples of both are interleaved so machine noise hits both alike.
Target: median <= 50 us per set. Also reports the log filter's cost on a line
without secrets while 200 secrets are tracked, next to the cost of formatting
that line as JSON. Prints one JSON object; exit 0 on pass.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from clinicbridge.core.clock import SystemClock
from clinicbridge.core.logs import JsonFormatter
from clinicbridge.core.secrets import Secret, SecretRedactingFilter
from clinicbridge.core.tenancy import create_tenant
from clinicbridge.db.engine import create_database
from clinicbridge.db.migrate import upgrade
from clinicbridge.vault import KeyRing, Vault
from clinicbridge.vault.crypto import field_context

TARGET_MEDIAN_US = 50.0


def _credentials() -> dict[str, str]:
    return {
        "api_key": "sk_live_" + secrets.token_urlsafe(24),
        "webhook_secret": "whsec_" + secrets.token_urlsafe(24),
        "account_sid": "AC" + secrets.token_hex(16),
        "auth_token": secrets.token_hex(16),
    }


def _sample_us(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1000


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered), 2),
        "p99_us": round(ordered[int(len(ordered) * 0.99) - 1], 2),
    }


def _log_filter_us(runs: int) -> dict[str, float]:
    """The filter on a line without secrets (200 tracked) vs formatting that line."""
    tracked = [Secret(secrets.token_urlsafe(24)) for _ in range(200)]
    log_filter, formatter = SecretRedactingFilter(), JsonFormatter()
    args = ("GET", "/api/v1/tenant", 200, 3.2, "req_01JD3ABCDEFGHJKMNPQRSTVWXY")
    filtered, formatted = [], []
    for _ in range(runs):
        record = logging.LogRecord(
            "clinicbridge.access", logging.INFO, __file__, 1, "%s %s %s %.1fms %s", args, None
        )
        record.fields = {"tenant_id": "ten_01JD3ABCDEFGHJKMNPQRSTVWXY", "status": 200}
        filtered.append(_sample_us(partial(log_filter.filter, record)))
        formatted.append(_sample_us(partial(formatter.format, record)))
    del tracked
    return {
        "filter_median_us": round(statistics.median(filtered), 2),
        "baseline_json_format_median_us": round(statistics.median(formatted), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = create_database(f"sqlite:///{tmp}/bench.db")
        upgrade(db.engine)
        with db.write() as session:
            tenant_id = create_tenant(session, name="Bench Clinic", now=SystemClock().now()).id
        vault = Vault(db, KeyRing.load(Path(tmp) / "master.key"))
        creds = _credentials()
        vault.open(tenant_id, "int_bench", vault.seal(None, tenant_id, "int_bench", creds))

        aead = AESGCM(AESGCM.generate_key(bit_length=256))
        plain = [
            (v.encode(), field_context(tenant_id, "int_bench", k, 1)) for k, v in creds.items()
        ]

        def vault_set() -> None:
            vault.open(tenant_id, "int_bench", vault.seal(None, tenant_id, "int_bench", creds))

        def raw_set() -> None:
            for data, context in plain:
                nonce = os.urandom(12)
                aead.decrypt(nonce, aead.encrypt(nonce, data, context), context)

        for _ in range(500):  # warm-up
            vault_set()
            raw_set()
        vault_samples, raw_samples = [], []
        for _ in range(args.iterations):
            vault_samples.append(_sample_us(vault_set))
            raw_samples.append(_sample_us(raw_set))
        db.dispose()

    measured = _summary(vault_samples)
    baseline = _summary(raw_samples)
    result = {
        "benchmark": "vault_seal_open",
        "fields_per_set": len(creds),
        "iterations": args.iterations,
        "vault": measured,
        "baseline_raw_aesgcm": baseline,
        "overhead_ratio": round(measured["median_us"] / baseline["median_us"], 2),
        "log_line_without_secrets": _log_filter_us(2000),
        "target_median_us": TARGET_MEDIAN_US,
        "pass": measured["median_us"] <= TARGET_MEDIAN_US,
    }
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
