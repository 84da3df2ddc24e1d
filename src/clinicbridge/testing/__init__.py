"""Fakes of outside services, shipped with the package for tests and demos.

Each fake follows the provider's documented API (request encoding, response and
error shapes, pagination) closely enough that the provider's own SDK can talk to it.
"""
