"""The one outbound HTTP client: timeouts, retries, circuit breaker, rate limits, call log."""
