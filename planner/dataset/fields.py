"""Which field of a record holds the training text, and the text pieces of one record.

Layouts (the ones TRL's SFTTrainer accepts, trl/trainer/sft_trainer.py): ``text`` (language modelling),
``messages`` (chat: a list of ``{"role", "content"}``; ShareGPT's ``conversations`` with ``value`` too),
prompt/completion pairs (``prompt`` + ``completion`` or ``response``; Alpaca's ``instruction`` +
``input`` + ``output``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from planner.errors import PlannerError

CHAT_FIELDS = ("messages", "conversations")
TEXT_FIELDS = ("text", "content")
PAIRS = (("prompt", "completion"), ("prompt", "response"), ("instruction", "input", "output"),
         ("instruction", "output"), ("question", "answer"))


@dataclass(frozen=True)
class Layout:
    """How records are read: the field names used and whether they are chat lists."""

    fields: tuple[str, ...]
    chat: bool

    @property
    def name(self) -> str:
        """The field(s) as the report shows them (``prompt+completion``)."""
        return "+".join(self.fields)


def _is_chat(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def detect_layout(records: list[dict[str, Any]], field: str | None = None) -> Layout:
    """The layout of ``records`` (from the first record), or the one ``field`` names.

    Raises:
        PlannerError: ``field`` not in the records (with the closest name), or no known layout.
    """
    first = records[0]
    keys = list(first)
    if field is not None:
        if field not in first:
            close = difflib.get_close_matches(field, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PlannerError(f"dataset field {field!r} not found (fields: {', '.join(keys)}){hint}")
        return Layout((field,), _is_chat(first[field]))
    for name in CHAT_FIELDS:
        if name in first and _is_chat(first[name]):
            return Layout((name,), True)
    for name in TEXT_FIELDS:
        if name in first and isinstance(first[name], str):
            return Layout((name,), False)
    for pair in PAIRS:
        if all(k in first for k in pair):
            return Layout(pair, False)
    raise PlannerError(f"no text field found (fields: {', '.join(keys)}); name one with --dataset-field "
                       f"(text, messages, or prompt/completion pairs are detected)")


def pieces(record: dict[str, Any], layout: Layout, index: int) -> tuple[list[str], int]:
    """The text pieces of one record and its message count (0 for non-chat layouts).

    Raises:
        PlannerError: the record lacks the field (with its 1-based record number).
    """
    try:
        if layout.chat:
            messages = record[layout.fields[0]]
            if not _is_chat(messages):
                raise KeyError(layout.fields[0])
            return [str(m.get("content", m.get("value", "")) or "") for m in messages], len(messages)
        return [str(record[f]) if record[f] is not None else "" for f in layout.fields], 0
    except KeyError as err:
        raise PlannerError(f"record {index + 1}: missing field {err.args[0]!r} "
                           f"(or it is not a {'message list' if layout.chat else 'value'})") from None
