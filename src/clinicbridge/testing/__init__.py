"""Fakes of outside services, shipped with the package for tests and demos: each one
follows its provider's documented protocol, so tests do not agree with themselves."""
