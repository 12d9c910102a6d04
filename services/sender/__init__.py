"""The sender: invoices and credit notes reach customers by email (docs/billing.md, "Email delivery")."""
