"""The application layer: the ``cdrflow`` command line's root, the demo and the orchestration of
every service (``cdrflow up``). It sits on top: it imports the services and the shared kit
(``cdrflow``), and nothing imports it (the import-linter contract in pyproject.toml holds this)."""
