"""Mail gateway: an SMTP server (aiosmtpd) that turns carriers' attachments into file-arrived events.

``addresses`` reads recipients, ``extract`` finds the billing files in a message (zip, gz and
forwarded messages opened; signature images ignored), ``plan`` decides each file's metadata;
all three are pure. ``gateway`` answers SMTP and spools accepted messages durably; ``worker``
announces their files; ``carriers`` and ``commands`` are the operator side. See docs/mailgate.md.
"""
