"""The scheduler: closes each customer's billing period once it has ended plus a grace, and the
billing-run and charge commands operators use by hand."""
