"""Invoicer: keeps the ledger of rated calls and, when a billing run closes, issues the invoice."""
