"""GPU probe: out-of-memory handling, result assembly, and (with a GPU) the real thing."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.conftest import needs_torch_stack

pytestmark = needs_torch_stack

GIB = float(1 << 30)


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_gpu = pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU")


def test_is_oom_recognizes_cuda_and_extension_errors() -> None:
    import torch

    from probes.gpu import is_oom

    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


@pytest.fixture()
def fake_cuda_counters(monkeypatch):
    """torch.cuda memory functions as plain counters, so GpuSession.run runs without a GPU."""
    import bitsandbytes  # noqa: F401 - imported before is_available is patched (it probes CUDA at import)
    import peft  # noqa: F401
    import torch

    state = {"allocated": 10 * GIB, "peak": 10 * GIB, "freed": 0}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: state.__setitem__("freed", state["freed"] + 1))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a: state.__setitem__("peak", state["allocated"]))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a: state["allocated"])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: state["peak"])
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a: state["peak"] + GIB)
    monkeypatch.setattr("probes.detect.nvml_process_used_bytes", lambda *a, **k: None)
    monkeypatch.setattr("probes.detect.nvml_device_used_bytes", lambda *a, **k: None)
    monkeypatch.setattr("probes.build.random_batch", lambda *a, **k: object())
    monkeypatch.setattr("probes.build.vocab_size", lambda model: 100)
    return state


def _session(spec):
    from probes.gpu import GpuSession

    session = GpuSession.__new__(GpuSession)
    session.__init__({}, spec)
    session.model = SimpleNamespace()
    session.optimizer = SimpleNamespace(zero_grad=lambda set_to_none=True: None)
    return session


def test_oom_in_backward_is_a_result(fake_cuda_counters, monkeypatch) -> None:
    import torch

    from planner.specs import TrainSpec

    phases: list[str] = []

    def step(model, optimizer, batch, spec, device_type, on_phase):
        on_phase("forward")
        fake_cuda_counters["peak"] = 70 * GIB
        on_phase("backward")
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")

    monkeypatch.setattr("probes.build.train_step", step)
    session = _session(TrainSpec(micro_batch=8))
    session.events = SimpleNamespace(phase=phases.append, step=lambda *a: None)
    run = session.run(8, steps=2)
    assert run.fits is False and run.failed_phase == "backward"
    assert "OutOfMemoryError" in run.error and run.peak_allocated == 70 * GIB
    assert fake_cuda_counters["freed"] >= 2  # before and after the attempt
    assert phases == ["forward", "backward"]


def test_successful_run_measures_steps(fake_cuda_counters, monkeypatch) -> None:
    from planner.specs import TrainSpec

    calls = []

    def step(model, optimizer, batch, spec, device_type, on_phase):
        calls.append(spec.micro_batch)
        fake_cuda_counters["peak"] = 20 * GIB

    monkeypatch.setattr("probes.build.train_step", step)
    run = _session(TrainSpec(seq_len=512)).run(2, steps=3)
    assert run.fits and len(calls) == 4 and len(run.step_seconds) == 3  # 1 warm-up + 3 measured
    assert run.peak_allocated == 20 * GIB and run.peak_reserved == 21 * GIB
    assert run.tokens_per_s is not None and run.tokens_per_s > 0


def test_max_batch_search_with_a_fake_session(fake_cuda_counters, monkeypatch) -> None:
    import torch

    from planner.specs import TrainSpec
    from probes.search import largest_fitting

    def step(model, optimizer, batch, spec, device_type, on_phase):
        on_phase("forward")
        if spec.micro_batch > 13:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr("probes.build.train_step", step)
    session = _session(TrainSpec())
    best, tried = largest_fitting(lambda b: session.run(b, 2).fits)
    assert best == 13 and tried[16] is False and tried[13] is True


def test_result_carries_calibration_and_errors() -> None:
    from planner.estimator import estimate
    from planner.specs import TrainSpec
    from probes.run import ProbeRequest, _gpu_result, environment

    spec = TrainSpec(seq_len=512)
    est = estimate("llama-3.2-1b", spec, "h100")
    session = SimpleNamespace(context_bytes=0.5 * GIB, after_load=2.3 * GIB, after_optimizer_init=2.3 * GIB,
                              params_total=1, params_trainable=1, load_seconds=3.0)
    run = SimpleNamespace(fits=True, failed_phase=None, error=None, peak_allocated=4.0 * GIB,
                          peak_reserved=4.4 * GIB, device_peak=5.0 * GIB, after_first_step=2.4 * GIB,
                          step_seconds=[0.5, 0.5], tokens_per_s=1024.0, interrupted=False)
    result = _gpu_result(ProbeRequest(model="llama-3.2-1b", spec=spec, argv=["loraplan", "probe"]), est,
                         environment(["loraplan", "probe"], gpu="NVIDIA H100 80GB HBM3"), "NVIDIA H100 80GB HBM3",
                         None, session, run, None)
    data = json.loads(result.model_dump_json())
    assert data["mode"] == "gpu" and data["fits"] is True and data["failed_phase"] is None
    assert data["measured_gib"] == {"after_load": pytest.approx(2.3), "peak_allocated": 4.0,
                                    "peak_reserved": pytest.approx(4.4), "device": 5.0}
    cal = data["calibration"]
    assert cal["cuda_context_gib"] == 0.5
    assert cal["allocator_reserve_gib"] == pytest.approx(0.4)
    assert cal["allocator_reserve_fraction"] == pytest.approx(0.1)
    assert data["error_pct"]["allocated"] == pytest.approx((est.peak_gib.allocated - 4.0) / 4.0 * 100)
    assert data["tokens_per_s"] == 1024.0 and data["environment"]["command"] == ["loraplan", "probe"]


def test_calibration_round_trips_into_the_estimator(tmp_path) -> None:
    from planner.calibration import Calibration, load_calibration
    from planner.cli.output import save_json
    from probes.results import Environment, MeasuredGiB, ProbeResult

    measured = Calibration(gpu="NVIDIA H100 80GB HBM3", cuda_context_gib=0.52, allocator_reserve_gib=0.3,
                           allocator_reserve_fraction=0.05)
    result = ProbeResult(model="m", mode="gpu", measured_gib=MeasuredGiB(), environment=Environment(), fits=True,
                         calibration=measured)
    path = tmp_path / "probe.json"
    save_json(result.model_dump(mode="json"), path)  # what `loraplan probe --save` writes
    assert list(json.loads(path.read_text())["calibration"]) == ["gpu", "profile", "cuda_context_gib",
                                                                 "allocator_reserve_gib", "allocator_reserve_fraction"]
    assert load_calibration(path) == measured  # one type, written by the probe and read by the estimator


# --------------------------------------------------------------------------- real GPU


@pytest.mark.gpu
@needs_gpu
def test_detect_lists_the_gpu() -> None:
    from probes.detect import detect_gpus

    gpus = detect_gpus()
    assert gpus and gpus[0].total_gib > 1 and gpus[0].compute_capability


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_probe_small_model_matches_estimate(method: str) -> None:
    from planner.specs import Method, TrainSpec
    from probes.run import ProbeRequest, run_gpu_probe

    spec = TrainSpec(method=Method(method), seq_len=512)
    result = run_gpu_probe(ProbeRequest(model="llama-3.2-1b", spec=spec, argv=["test"]))
    assert result.fits, result.error
    assert result.measured_gib.peak_allocated > result.measured_gib.after_load > 0
    assert abs(result.error_pct.allocated) <= 10.0, result.components
    assert result.tokens_per_s and result.tokens_per_s > 0


@pytest.mark.gpu
@needs_gpu
def test_probe_out_of_memory_is_reported_and_freed() -> None:
    import torch

    from planner.specs import TrainSpec
    from probes.run import ProbeRequest, run_gpu_probe

    total = torch.cuda.get_device_properties(0).total_memory / GIB
    spec = TrainSpec(seq_len=4096, micro_batch=max(8, int(total)), grad_ckpt=False)
    result = run_gpu_probe(ProbeRequest(model="llama-3.2-1b", spec=spec, argv=["test"]))
    assert result.fits is False and result.failed_phase in {"forward", "backward", "optimizer"}
    assert torch.cuda.memory_allocated() < 0.1 * GIB


# --------------------------------------------------------------------------- the GPU code path on the CPU

TINY = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "max_position_embeddings": 256,
        "tie_word_embeddings": False, "rms_norm_eps": 1e-5}


@pytest.mark.parametrize("bits", [4, 8])
def test_quantized_build_trains_with_real_bitsandbytes_on_cpu(bits: int) -> None:
    """The GPU probe's QLoRA build (meta model, replace_with_bnb_linear, per-layer quantization,
    prepare_model_for_kbit_training, PEFT) with bitsandbytes' CPU kernels: two real steps."""
    import bitsandbytes as bnb
    import torch

    from planner.specs import Method, TrainSpec
    from probes import build
    from probes.gpu import create_quantized_model
    from probes.optim import build_optimizer

    spec = TrainSpec(method=Method.QLORA, seq_len=16, rank=4, quant_bits=bits)
    model = create_quantized_model(TINY, spec, torch.device("cpu"))
    layer = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    assert isinstance(model.model.layers[0].mlp.down_proj, layer)
    assert not isinstance(model.lm_head, layer)  # kept by get_keys_to_not_convert
    assert torch.isfinite(model.model.rotary_emb.inv_freq).all()
    model = build.prepare(model, TINY, spec)
    assert model.base_model.model.model.embed_tokens.weight.dtype == torch.float32  # prepare_model_for_kbit
    optimizer = build_optimizer(model, spec.optim)
    batch = build.random_batch(TINY["vocab_size"], spec, "cpu")
    for _ in range(2):
        build.train_step(model, optimizer, batch, spec, "cpu", lambda phase: None)
    assert optimizer.state  # states exist after the first step


def test_gpu_probe_end_to_end_on_cpu(fake_cuda_counters, monkeypatch, tmp_path) -> None:
    """run_gpu_probe with the device swapped for the CPU: load, steps, max-batch search, result JSON."""
    import torch

    from planner.specs import TrainSpec
    from probes import gpu
    from probes.results import GpuInfo
    from probes.run import ProbeRequest, run_gpu_probe

    config = tmp_path / "config.json"
    config.write_text(json.dumps(TINY))
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 11 * GIB)
    monkeypatch.setattr("probes.detect.require_gpu", lambda: [GpuInfo(
        index=0, name="NVIDIA H100 80GB HBM3", total_gib=79.2, compute_capability="9.0", bf16=True)])
    init = gpu.GpuSession.__init__

    def cpu_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.device = torch.device("cpu")

    monkeypatch.setattr(gpu.GpuSession, "__init__", cpu_init)
    monkeypatch.setattr("probes.build.random_batch", build_random_batch())
    monkeypatch.setattr("probes.build.vocab_size", lambda model: TINY["vocab_size"])
    from probes import build

    real_step = build.train_step

    def step(model, optimizer, batch, spec, device_type, on_phase):
        if spec.micro_batch > 3:  # a small "GPU"
            on_phase("forward")
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        real_step(model, optimizer, batch, spec, device_type, on_phase)

    monkeypatch.setattr("probes.build.train_step", step)
    spec = TrainSpec(seq_len=16, rank=4)
    result = run_gpu_probe(ProbeRequest(model=str(config), spec=spec, find_max_batch=True, argv=["x"]))
    assert result.mode == "gpu" and result.fits and result.failed_phase is None
    assert result.params["trainable"] == 8192
    assert result.max_batch is not None and result.max_batch.measured == 3
    assert result.max_batch.estimated is not None  # estimator's answer for the matched H100 profile
    assert result.environment.gpu == "NVIDIA H100 80GB HBM3"
    assert result.calibration is None  # no NVML: the CUDA context is not measurable
    assert result.gpu is not None and len(result.gpu.step_seconds) == 2


def build_random_batch():
    import torch

    def batch(vocab, spec, device):
        return torch.randint(0, vocab, (spec.micro_batch, spec.seq_len), device=device)

    return batch
