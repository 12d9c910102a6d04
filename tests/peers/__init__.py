"""Real protocol peers for the collection tests, on 127.0.0.1 only: pyftpdlib FTP/FTPS servers,
an asyncssh SFTP server, self-signed certificates. Each stops when its ``with`` block ends."""
