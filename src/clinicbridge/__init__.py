"""ClinicBridge: the integration hub clinics trust."""

__version__ = "0.1.0"
