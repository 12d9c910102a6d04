"""Rater: prices each call for its customer. The foundation rates a flat per-minute price;
the rating engine (tariffs, bands, rate sheets) replaces ``flat``."""
