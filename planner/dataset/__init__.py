"""The user's own training data (``--dataset``): read records, count tokens, size batches.

:mod:`~planner.dataset.readers` reads JSONL/JSON/CSV/Parquet, :mod:`~planner.dataset.fields` turns a
record into text pieces, :mod:`~planner.dataset.tokens` counts tokens (a local ``tokenizer.json`` or a
bytes-per-token estimate), :mod:`~planner.dataset.stats` reports the length distribution, truncation
and padding, :mod:`~planner.dataset.plan` ties it to the estimate's sequence length and time.
"""
