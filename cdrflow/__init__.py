"""cdrflow: the shared kit every service imports (bus, events, database, file store, money, settings)."""

__version__ = "0.1.0"
