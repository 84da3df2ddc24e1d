"""Fakes of outside services, shipped for tests and demos (never used in production).

Each fake follows the provider's documented HTTP API (request encoding, response and
error shapes, pagination) and is an ``httpx.MockTransport`` handler; ``hosts.HostRouter``
sends each host to its fake, and ``server.serve`` puts a handler on 127.0.0.1.
"""
