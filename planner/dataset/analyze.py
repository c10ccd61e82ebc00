"""Read, count and summarize a dataset file: :func:`analyze` -> :class:`Analysis` (no batching yet)."""

from __future__ import annotations

from dataclasses import dataclass

from planner.dataset.fields import detect_layout, pieces
from planner.dataset.readers import read_records
from planner.dataset.tokens import dataset_constants, find_tokenizer, make_counter


@dataclass(frozen=True)
class Analysis:
    """Per-example token counts of one file and how they were obtained."""

    path: str
    format: str
    field: str
    counts: list[int]
    tokenizer: str
    bytes_per_token: float | None
    assumptions: list[str]
    warnings: list[str]


def analyze(path: str, model: str, hub_id: str | None = None, field: str | None = None,
            tokenizer: str | None = None) -> Analysis:
    """Token count of every example of ``path`` (special tokens and chat template overhead included).

    Raises:
        PlannerError: unreadable file, unknown format or field, empty dataset, unreadable tokenizer.
    """
    fmt, records = read_records(path)
    layout = detect_layout(records, field)
    consts = dataset_constants()
    counter = make_counter(find_tokenizer(model, hub_id, tokenizer))
    flat: list[str] = []
    spans: list[tuple[int, int, int]] = []  # (start, end, messages) per record
    for i, record in enumerate(records):
        texts, messages = pieces(record, layout, i)
        spans.append((len(flat), len(flat) + len(texts), messages))
        flat.extend(texts)
    piece_tokens = counter.count(flat)
    special = int(consts["special_tokens_per_example"])
    per_message = int(consts["chat_tokens_per_message"])
    counts = [sum(piece_tokens[a:b]) + special + per_message * m for a, b, m in spans]
    assumptions = [f"{special} special tokens per example (BOS + EOS): {consts['special_tokens_per_example_source']}"]
    if layout.chat:
        assumptions.append(f"{per_message} template tokens per chat message: "
                           f"{consts['chat_tokens_per_message_source']}")
    warnings = []
    if counter.tokenizer is None:
        warnings.append(f"tokens = UTF-8 bytes / {counter.bytes_per_token:g} (no local tokenizer.json; "
                        f"see --tokenizer)")
        assumptions.append(f"{counter.bytes_per_token:g} bytes per token: {consts['bytes_per_token_source']}")
    return Analysis(path=str(path), format=fmt.value, field=layout.name, counts=counts, tokenizer=counter.name,
                    bytes_per_token=counter.bytes_per_token, assumptions=assumptions, warnings=warnings)
