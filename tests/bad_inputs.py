"""Issue 13's bad-input classes, run against a checkout: exit code, traceback or not, first message line.

``python -m tests.bad_inputs [CHECKOUT ...]`` runs every case with ``python -m planner`` in each checkout
(default: this one) and prints one markdown table, a column group per checkout (before/after tables).
Files (binary, latin-1, wrong-typed configs, calibration and price files) are written to a temp dir.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMA = json.loads((ROOT / "profiles" / "models" / "llama-3.2-1b.json").read_text())["config"]
MIXTRAL = json.loads((ROOT / "profiles" / "models" / "mixtral-8x7b.json").read_text())["config"]
HUGE = "9" * 400


def _files(tmp: Path) -> dict[str, str]:
    """Name -> path of every file a case uses."""
    out: dict[str, str] = {}

    def config(name: str, base: dict, **change: object) -> None:
        path = tmp / f"{name}.json"
        path.write_text(json.dumps({**base, **change}))
        out[name] = str(path)

    (tmp / "binary.json").write_bytes(bytes(range(256)))
    out["binary"] = str(tmp / "binary.json")
    (tmp / "latin1.json").write_bytes(json.dumps({**LLAMA, "name": "caf\u00e9"}, ensure_ascii=False).encode("latin-1"))
    out["latin1"] = str(tmp / "latin1.json")
    config("hidden_str", LLAMA, hidden_size="2048")
    config("hidden_list", LLAMA, hidden_size=[2048])
    config("heads0", LLAMA, num_attention_heads=0)
    config("vocab_true", LLAMA, vocab_size=True)
    config("tie_str", LLAMA, tie_word_embeddings="false")
    config("kv_nodiv", LLAMA, num_key_value_heads=5)
    config("hidden_nodiv", {k: v for k, v in LLAMA.items() if k != "head_dim"}, hidden_size=2050)
    config("moe_k0", MIXTRAL, num_experts_per_tok=0)
    config("moe_k9", MIXTRAL, num_experts_per_tok=9)
    config("auto_map", LLAMA, auto_map={"AutoModelForCausalLM": "modeling_x.X"})
    (tmp / "noconfig").mkdir()
    out["noconfig"] = str(tmp / "noconfig")
    (tmp / "dirconfig" / "config.json").mkdir(parents=True)
    out["dirconfig"] = str(tmp / "dirconfig")
    cal = {"gpu": "NVIDIA GeForce RTX 4090", "profile": "RTX 4090", "cuda_context_gib": 0.5,
           "allocator_reserve_fraction": 0.05}
    for name, change in {"cal_neg": {"cuda_context_gib": -48.0}, "cal_nan": {"allocator_reserve_fraction": "NaN"},
                         "cal_other": {"gpu": "NVIDIA H100 80GB HBM3", "profile": "H100 SXM"}}.items():
        (tmp / f"{name}.json").write_text(json.dumps({"calibration": {**cal, **change}}).replace('"NaN"', "NaN"))
        out[name] = str(tmp / f"{name}.json")
    (tmp / "cal_bin.json").write_bytes(b"\xff\xfe\x00garbage")
    out["cal_bin"] = str(tmp / "cal_bin.json")
    entry = {"provider": "acme", "instance": "x1", "gpu": "RTX 4090", "gpus": 1, "gpu_memory_gib": 24,
             "price_per_hour": 0.5, "region": "eu", "date": "2026-12-01", "source": "test"}
    for name, change in {"price_nogpu": {"gpu": "RTX 9999"}, "price_nan": {"price_per_hour": "NaN"},
                         "price_str": {"price_per_hour": "0.5"}, "price_mem": {"gpu_memory_gib": 80}}.items():
        (tmp / f"{name}.json").write_text(json.dumps({"instances": [{**entry, **change}]}).replace('"NaN"', "NaN"))
        out[name] = str(tmp / f"{name}.json")
    (tmp / "price_bin.json").write_bytes(b"\x80\x81\x82")
    out["price_bin"] = str(tmp / "price_bin.json")
    return out


def cases(f: dict[str, str]) -> list[tuple[str, list[str]]]:
    """(label, argv after ``python -m planner``) for every bad-input class of issue 13."""
    e = ["estimate"]
    m = "llama-3.2-1b"
    return [
        ("config: binary", e + [f["binary"]]),
        ("probe --gpus 0", ["probe", m, "--gpus", "0"]),
        ("probe --offload with ddp", ["probe", m, "--gpus", "2", "--parallel", "ddp", "--offload", "optimizer"]),
        ("probe --parallel zero2 (no DeepSpeed run)", ["probe", m, "--gpus", "2", "--parallel", "zero2"]),
        ("probe --gpus 8 --device cuda", ["probe", m, "--gpus", "8", "--device", "cuda"]),
        ("config: latin-1", e + [f["latin1"]]),
        ('config: "hidden_size": "2048"', e + [f["hidden_str"]]),
        ("config: hidden_size list", e + [f["hidden_list"]]),
        ("config: num_attention_heads 0", e + [f["heads0"]]),
        ('config: "vocab_size": true', e + [f["vocab_true"]]),
        ('config: "tie_word_embeddings": "false"', e + [f["tie_str"]]),
        ("config: kv heads do not divide heads", e + [f["kv_nodiv"]]),
        ("config: hidden not divisible by heads", e + [f["hidden_nodiv"]]),
        ("config: experts_per_tok 0", e + [f["moe_k0"]]),
        ("config: experts_per_tok > experts", e + [f["moe_k9"]]),
        ("config: auto_map (warn)", e + [f["auto_map"], "--json"]),
        ("path: does not exist", e + ["./nope/config.json"]),
        ("path: folder without config.json", e + [f["noconfig"]]),
        ("path: config.json is a directory", e + [f["dirconfig"]]),
        ("hub id: meta-llama/", e + ["meta-llama/"]),
        ("--alpha nan", e + [m, "--alpha", "nan"]),
        ("--lora-dropout nan", e + [m, "--lora-dropout", "nan"]),
        ("--seq-len 400 digits", e + [m, "--seq-len", HUGE]),
        ("--rank 400 digits", e + [m, "--rank", HUGE]),
        ("--alpha 1e400", e + [m, "--alpha", "1e400"]),
        ("--method full --rank 8", e + [m, "--method", "full", "--rank", "8"]),
        ("--dora with full", e + [m, "--method", "full", "--dora"]),
        ("--quant-bits 8 without qlora", e + [m, "--quant-bits", "8"]),
        ("--no-double-quant without qlora", e + [m, "--no-double-quant"]),
        ("--no-kbit-prepare without qlora", e + [m, "--no-kbit-prepare"]),
        ("--fp32-master with qlora", e + [m, "--method", "qlora", "--fp32-master"]),
        ("--targets all-linear,q_proj", e + [m, "--targets", "all-linear,q_proj"]),
        ('--gpu ""', e + [m, "--gpu", ""]),
        ("--calibrate binary", e + [m, "--gpu", "4090", "--calibrate", f["cal_bin"]]),
        ("--calibrate negative", e + [m, "--gpu", "4090", "--calibrate", f["cal_neg"]]),
        ("--calibrate NaN", e + [m, "--gpu", "4090", "--calibrate", f["cal_nan"]]),
        ("--calibrate other GPU (warn)", e + [m, "--gpu", "4090", "--calibrate", f["cal_other"], "--json"]),
        ("recommend --dataset-tokens nan", ["recommend", m, "--gpu", "4090", "--dataset-tokens", "nan"]),
        ("recommend --dataset-tokens inf", ["recommend", m, "--gpu", "4090", "--dataset-tokens", "inf"]),
        ("recommend --dataset-tokens 1e400", ["recommend", m, "--gpu", "4090", "--dataset-tokens", "1e400"]),
        ("recommend --avg-tokens nan", ["recommend", m, "--gpu", "4090", "--examples", "10", "--avg-tokens", "nan"]),
        ("recommend --epochs nan", ["recommend", m, "--gpu", "4090", "--epochs", "nan"]),
        ("recommend --seq-len 400 digits", ["recommend", m, "--gpu", "4090", "--seq-len", HUGE]),
        ("recommend --framework nope", ["recommend", m, "--gpu", "4090", "--framework", "nope"]),
        ("instances --framework nope", ["instances", m, "--framework", "nope"]),
        ("recommend --versions trl", ["recommend", m, "--gpu", "4090", "--versions", "trl"]),
        ("recommend --framework torchtune --liger", ["recommend", m, "--gpu", "4090", "--framework", "torchtune",
                                                     "--liger"]),
        ("recommend --gpus 0", ["recommend", m, "--gpu", "h100", "--gpus", "0"]),
        ("recommend --gpus 9 (more than a node)", ["recommend", m, "--gpu", "h100", "--gpus", "9"]),
        ("recommend --max-gpus 0", ["recommend", m, "--gpu", "h100", "--max-gpus", "0"]),
        ("recommend --max-gpus 5000", ["recommend", m, "--gpu", "h100", "--max-gpus", "5000"]),
        ("recommend --gpus 4 --max-gpus 2", ["recommend", m, "--gpu", "h100", "--gpus", "4", "--max-gpus", "2"]),
        ("recommend --host-ram -1", ["recommend", m, "--gpu", "h100", "--gpus", "2", "--host-ram", "-1"]),
        ("instances --provider ,,", ["instances", m, "--provider", ",,"]),
        ("instances --max-price-per-hour nan", ["instances", m, "--max-price-per-hour", "nan"]),
        ("--prices binary", ["instances", m, "--prices", f["price_bin"]]),
        ("--prices unknown GPU", ["instances", m, "--prices", f["price_nogpu"]]),
        ("--prices NaN price", ["instances", m, "--prices", f["price_nan"]]),
        ('--prices "0.5" string', ["instances", m, "--prices", f["price_str"]]),
        ("--prices gpu_memory_gib 80 for 4090", ["instances", m, "--prices", f["price_mem"]]),
        ("HF_ENDPOINT bad port", ["estimate", "someone/some-model"]),
        ("serve: unknown model", ["serve", "lama-3-8b"]),
        ("serve: unknown GPU", ["serve", m, "--gpu", "4091"]),
        ("serve --kv-dtype fp8 with hf", ["serve", m, "--kv-dtype", "fp8"]),
        ("serve --merged --adapters 2", ["serve", m, "--merged", "--adapters", "2"]),
        ("serve --batch 0", ["serve", m, "--batch", "0"]),
        ("serve --context -1", ["serve", m, "--context", "-1"]),
        ("serve --context 400 digits", ["serve", m, "--context", HUGE]),
        ("serve --context above max positions", ["serve", m, "--context", "200000"]),
        ("serve --engine vllm without --gpu", ["serve", m, "--engine", "vllm"]),
        ("serve --gpu-memory-utilization nan", ["serve", m, "--engine", "vllm", "--gpu", "4090",
                                                "--gpu-memory-utilization", "nan"]),
        ("serve: nothing fits (warn)", ["serve", "llama-3-70b", "--gpu", "4090", "--json"]),
    ]


def run(checkout: Path, argv: list[str], env: dict[str, str]) -> tuple[int, bool, str]:
    """(exit code, traceback?, first stderr line, else first stdout line / the warning) of one case."""
    try:
        proc = subprocess.run([sys.executable, "-m", "planner", *argv], cwd=checkout, env=env, capture_output=True,
                              text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return -1, False, "timeout (120 s)"
    tb = "Traceback (most recent call last)" in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    if tb:
        msg = lines[-1] if lines else ""
    elif lines:
        msg = lines[0]
    else:
        msg = ""
        try:
            warn = json.loads(proc.stdout).get("warnings") or []
            msg = "warning: " + warn[0] if warn else "(answer, no warning)"
        except (ValueError, AttributeError):
            msg = "(answer)"
    return proc.returncode, tb, msg[:110]


def main(argv: list[str]) -> int:
    checkouts = [Path(a).resolve() for a in argv] or [ROOT]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CACHE_HOME": tempfile.mkdtemp(), "PYTHONPATH": ""}
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(Path(tmp))
        head = "| input | " + " | ".join(f"rc ({c.name}) | tb | message" for c in checkouts) + " |"
        print(head)
        print("|" + "---|" * (1 + 3 * len(checkouts)))
        for label, args in cases(files):
            cells = []
            for checkout in checkouts:
                case_env = {**env, **({"HF_ENDPOINT": "https://x:99999", "HF_HUB_OFFLINE": "0"}
                                      if label.startswith("HF_ENDPOINT") else {})}
                rc, tb, msg = run(checkout, args, case_env)
                cells += [str(rc), "yes" if tb else "no", msg.replace("|", "/").replace(tmp, "$TMP")]
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
