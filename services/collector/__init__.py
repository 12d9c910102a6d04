"""Collector: polls carrier FTP/FTPS/SFTP sources and emits file-arrived.

Not built yet: it arrives with the Collection issue. Until then files enter by
upload (services/admin) only; `cdrflow run collector` says so and exits 1.
"""
