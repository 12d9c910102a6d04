"""Admin: the operator API (HTTP). Upload files, release or discard held files, close billing runs, read invoices."""
