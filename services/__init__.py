"""cdrflow services: each folder is a domain library plus a thin `service` module."""
