"""How large a record-level event may grow: ``cdrflow.batches.cut`` cuts batches at
``batch_size`` records or about ``SPLIT_BYTES`` of JSON, whichever comes first; the cut depends
only on the records, so a repeat after a crash cuts the same batches (and so the same event ids).
"""

from __future__ import annotations

SPLIT_BYTES = 4 * 1024 * 1024
"""Estimated JSON bytes per record-level event: half the record-level topics' message limit
(``RECORD_MESSAGE_BYTES``, 8 MiB), so the estimate may be out by 2× and the event still fits."""
