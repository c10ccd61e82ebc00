"""``planner.dataset``: readers, fields, token counts (a WordLevel tokenizer built here), batching, the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from planner.cli import cli
from planner.dataset.analyze import analyze
from planner.dataset.readers import read_records
from planner.dataset.stats import batching, histogram, lengths
from planner.dataset.tokens import find_tokenizer
from planner.errors import PlannerError

DATA = Path(__file__).resolve().parent / "data"
WORDS_PER_TEXT = [6, 4, 21, 1]  # tests/data/text.jsonl, one WordLevel token per word


def _words() -> list[str]:
    words: set[str] = set()
    for f in DATA.iterdir():
        if not f.is_file():  # e.g. tests/data/tiny-llama/ (a model folder for the launch probe)
            continue
        words.update(f.read_text().replace('"', " ").replace(",", " ").replace(":", " ").split())
    return sorted(words)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level tokenizer.json over the test data's words (built here: no download)."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(_words())}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    folder = tmp_path_factory.mktemp("tok")
    tok.save(str(folder / "tokenizer.json"))
    return folder


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


# --------------------------------------------------------------------------- readers and fields


@pytest.mark.parametrize(("name", "fmt", "n", "field"), [
    ("text.jsonl", "jsonl", 4, "text"), ("chat.jsonl", "jsonl", 2, "messages"),
    ("pairs.json", "json", 3, "prompt+completion"), ("alpaca.csv", "csv", 2, "instruction+input+output"),
])
def test_formats_and_fields(name: str, fmt: str, n: int, field: str) -> None:
    a = analyze(str(DATA / name), "gpt2")
    assert (a.format, len(a.counts), a.field) == (fmt, n, field)
    assert a.tokenizer == "bytes-estimate" and a.bytes_per_token == 4.0 and a.warnings


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a b c", "d"]}), tmp_path / "d.parquet")
    fmt, records = read_records(tmp_path / "d.parquet")
    assert fmt.value == "parquet" and records == [{"text": "a b c"}, {"text": "d"}]


def test_exact_counts_with_a_tokenizer(tokenizer_dir: Path) -> None:
    a = analyze(str(DATA / "text.jsonl"), "gpt2", tokenizer=str(tokenizer_dir))
    assert a.counts == [w + 2 for w in WORDS_PER_TEXT]  # + BOS/EOS (profiles/dataset.json)
    assert a.tokenizer.endswith("tokenizer.json") and a.bytes_per_token is None and not a.warnings
    chat = analyze(str(DATA / "chat.jsonl"), "gpt2", tokenizer=str(tokenizer_dir / "tokenizer.json"))
    assert chat.counts == [7 + 2 + 2 * 5, 4 + 2 + 3 * 5]  # 5 template tokens per message
    assert any("per chat message" in s for s in chat.assumptions)


def test_tokenizer_from_model_folder_and_hub_cache(tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_tokenizer(str(tokenizer_dir), None, None) == tokenizer_dir / "tokenizer.json"
    import huggingface_hub

    seen = []
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name: seen.append((repo, name)) or str(tokenizer_dir / name))
    assert find_tokenizer("llama-3-8b", "meta-llama/Meta-Llama-3-8B", None) == tokenizer_dir / "tokenizer.json"
    assert seen == [("meta-llama/Meta-Llama-3-8B", "tokenizer.json")]
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: None)
    assert find_tokenizer("llama-3-8b", "meta-llama/Meta-Llama-3-8B", None) is None


@pytest.mark.parametrize(("args", "message"), [
    (("--dataset", str(DATA / "missing.jsonl")), "not found"),
    (("--dataset", str(DATA / "malformed.jsonl")), "line 2: malformed JSON"),
    (("--dataset", str(DATA / "empty.jsonl")), "is empty"),
    (("--dataset", str(DATA / "nofield.jsonl")), "no text field found"),
    (("--dataset", str(DATA / "text.jsonl"), "--dataset-field", "txt"), "did you mean 'text'"),
    (("--dataset", str(DATA / "text.jsonl").replace(".jsonl", ".jsnl")), "not found"),
    (("--packing",), "--packing needs --dataset"),
])
def test_bad_input_is_one_line_exit_2(args: tuple[str, ...], message: str) -> None:
    res = run("estimate", "gpt2", *args)
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "d.jsonx").write_text("{}")
    with pytest.raises(PlannerError, match=r"unknown dataset format \.jsonx.*did you mean \.json"):
        read_records(tmp_path / "d.jsonx")


# --------------------------------------------------------------------------- statistics


def test_lengths_and_histogram() -> None:
    n = lengths([1, 2, 3, 4, 100])
    assert (n.min, n.median, n.max) == (1, 3.0, 100) and n.p95 == pytest.approx(80.8)
    bins = histogram(list(range(1, 17)), bins=4)
    assert [(b.lo, b.hi, b.count) for b in bins] == [(1, 4, 4), (5, 8, 4), (9, 12, 4), (13, 16, 4)]


def test_padding_vs_packing() -> None:
    counts = [10, 30, 50, 200]
    pad = batching(counts, seq_len=100, micro_batch=2, packing=False)
    assert pad.truncated == 1 and pad.tokens_trained == 10 + 30 + 50 + 100
    assert pad.tokens_processed == 2 * 30 + 2 * 100 and pad.batch_seq_len == 100
    assert pad.padding_waste_pct == pytest.approx(100 * (1 - 190 / 260), abs=0.01)
    packed = batching(counts, seq_len=100, micro_batch=2, packing=True)
    assert packed.tokens_trained == 290 and packed.micro_batches == 2 and packed.tokens_processed == 300
    short = batching([10, 20], seq_len=100, micro_batch=2, packing=False)
    assert short.batch_seq_len == 20  # memory sized for the longest batch, not --seq-len


# --------------------------------------------------------------------------- CLI


def test_estimate_json_sizes_memory_for_the_longest_batch(tokenizer_dir: Path) -> None:
    base = json.loads(run("estimate", "gpt2", "--gpu", "4090", "--seq-len", "23", "--micro-batch", "2",
                          "--json").output)
    res = run("estimate", "gpt2", "--gpu", "4090", "--seq-len", "1024", "--micro-batch", "2", "--json",
              "--dataset", str(DATA / "text.jsonl"), "--tokenizer", str(tokenizer_dir))
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    d = data["dataset"]
    assert d["examples"] == 4 and d["tokens_total"] == sum(WORDS_PER_TEXT) + 8 and d["truncated"] == 0
    assert d["lengths"]["max"] == 23 and d["batching"]["batch_seq_len"] == 23 and d["seq_len"] == 1024
    assert data["train"]["seq_len"] == 23 and data["peak_gib"] == base["peak_gib"]
    assert d["hours_per_epoch"] > 0 and d["tokens_per_s"] > 0
    packed = json.loads(run("estimate", "gpt2", "--seq-len", "16", "--packing", "--json",
                            "--dataset", str(DATA / "text.jsonl"), "--tokenizer", str(tokenizer_dir)).output)
    assert packed["dataset"]["packing"] and packed["train"]["seq_len"] == 16 and packed["dataset"]["truncated"] == 1


def test_estimate_json_validates_against_schema(tokenizer_dir: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from planner.cli.schemas import schema

    data = json.loads(run("estimate", "gpt2", "--gpu", "4090", "--json", "--dataset", str(DATA / "chat.jsonl")).output)
    jsonschema.Draft202012Validator(schema("estimate")).validate(data)


def test_table_fits_80_columns(tokenizer_dir: Path) -> None:
    res = CliRunner().invoke(cli, ["estimate", "gpt2", "--gpu", "4090", "--dataset", str(DATA / "text.jsonl"),
                                   "--seq-len", "16"], terminal_width=80)
    assert res.exit_code == 0, res.output
    assert "1 examples (25.0%) longer than seq 16: truncated" in res.output
    assert "warning: tokens = UTF-8 bytes / 4" in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80


def counting_speed(folder: Path, tokenizer: Path, n: int) -> tuple[int, float, float]:
    """Write ``n`` examples of 20-219 words to ``folder``; (tokens, seconds to read, seconds to analyze)."""
    words = _words()
    path = folder / "big.jsonl"
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": " ".join(words[(i + j) % len(words)] for j in range(20 + i % 200))}) + "\n")
    start = time.perf_counter()
    read_records(path)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    a = analyze(str(path), "gpt2", tokenizer=str(tokenizer))
    assert len(a.counts) == n
    return sum(a.counts), read_s, time.perf_counter() - start


def test_counting_speed(tmp_path: Path, tokenizer_dir: Path) -> None:
    """10k examples here; ``python -m tests.test_dataset`` measures the 100k file of the README."""
    tokens, _, seconds = counting_speed(tmp_path, tokenizer_dir / "tokenizer.json", 10_000)
    assert tokens > 10_000 and seconds < 60


if __name__ == "__main__":
    import tempfile

    from tokenizers import Tokenizer, models, pre_tokenizers

    with tempfile.TemporaryDirectory() as tmp:
        vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(_words())}}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.save(f"{tmp}/tokenizer.json")
        tokens, read_s, total_s = counting_speed(Path(tmp), Path(tmp) / "tokenizer.json", 100_000)
        print(f"100,000 examples, {tokens:,} tokens: read {read_s:.2f} s, read+count {total_s:.2f} s = "
              f"{100_000 / total_s:,.0f} examples/s, {tokens / total_s:,.0f} tokens/s")


def test_recommend_with_a_dataset(tokenizer_dir: Path) -> None:
    res = run("recommend", "gpt2", "--gpu", "4090", "--json", "--dataset", str(DATA / "text.jsonl"),
              "--tokenizer", str(tokenizer_dir))
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["dataset"]["tokens"] == sum(WORDS_PER_TEXT) + 8  # the request's size: real tokens per epoch
    assert data["dataset_file"]["examples"] == 4 and data["dataset_file"]["lengths"]["max"] == 23
    assert data["plans"] and data["dataset_file"]["batching"]["micro_batch"] == data["plans"][0]["micro_batch"]
    clash = run("recommend", "gpt2", "--gpu", "4090", "--dataset", str(DATA / "text.jsonl"), "--examples", "5")
    assert clash.exit_code == 2 and "drop --examples" in clash.output
