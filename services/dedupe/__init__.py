"""Dedupe: fingerprints every arrived file; accepts new content, holds repeated content."""
