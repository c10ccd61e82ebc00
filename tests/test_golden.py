"""Golden corpus: every estimate / recommend / instances number stays what it was before the restructuring.

Regenerate only for a deliberate, documented change of the numbers: ``python -m tests.golden.corpus --write``.
"""

from __future__ import annotations

import pytest

from tests.golden import corpus


@pytest.mark.parametrize("kind", sorted(corpus.KINDS))
def test_golden_corpus_unchanged(kind: str) -> None:
    _, runner = corpus.KINDS[kind]
    rows = corpus.load(kind)
    failures = []
    for row in rows:
        problems = corpus.diff(row["output"], runner(row["case"]))
        if problems:
            failures.append(f"{row['case']}: " + "; ".join(problems[:5]))
    assert not failures, f"{len(failures)} of {len(rows)} {kind} cases changed:\n" + "\n".join(failures[:20])


def test_golden_corpus_is_large_enough() -> None:
    assert len(corpus.load("estimate")) >= 300
    assert len(corpus.load("recommend")) >= 12 and len(corpus.load("instances")) >= 6
