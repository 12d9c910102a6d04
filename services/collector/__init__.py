"""Collector: polls carriers' FTP, FTPS and SFTP sources and announces each new file as file-arrived.

``rules`` and ``plan`` are pure (which remote files to fetch, with what metadata); ``remote``
speaks the three protocols behind one small interface; ``poll`` runs one poll of one source;
``service`` schedules polls with per-source backoff. See docs/collection.md.
"""
