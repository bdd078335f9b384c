"""The settings service: the catalogue of system settings and their values."""
