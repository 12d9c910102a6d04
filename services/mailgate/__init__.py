"""Mail gateway: an SMTP server that turns carriers' attachments into file-arrived events.

Not built yet: it arrives with the Collection issue. Until then files enter by
upload (services/admin) only; `cdrflow run mailgate` says so and exits 1.
"""
