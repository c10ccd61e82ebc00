"""A multi-GPU plan as files to run: the ``accelerate`` config YAML and the launch command.

The keys are those ``accelerate config`` writes (accelerate v1.16.0
``src/accelerate/commands/config/cluster.py`` ``get_cluster_input``, saved by
``commands/config/config_args.py`` ``ClusterConfig.to_yaml_file`` with ``yaml.safe_dump``, keys sorted):
``distributed_type`` ``MULTI_GPU`` (DDP), ``FSDP`` (``fsdp_config``: ``fsdp_version`` 1 writes the sharding
strategy name under ``fsdp_reshard_after_forward``, ``fsdp_version`` 2 a bool) or ``DEEPSPEED``
(``deepspeed_config``: ``zero_stage``, ``offload_*_device`` from stage 2, ``zero3_save_16bit_model`` at stage 3,
``zero3_init_flag``, ``deepspeed_multinode_launcher`` across nodes). Values follow
``profiles/parallel.json`` (the engine defaults the memory model assumes). ``accelerate launch`` reads the file
(``ClusterConfig.from_yaml_file`` rejects unknown keys).
"""

from __future__ import annotations

from planner.parallel.shard import engine_defaults
from planner.parallel.spec import Offload, ParallelSpec, Strategy
from planner.specs import DType

CONFIG_FILE = "accelerate.yaml"
SCRIPT = "train.py"
_ZERO_STAGE = {Strategy.ZERO1: 1, Strategy.ZERO2: 2, Strategy.ZERO3: 3}
_FSDP1_SHARDING = {Strategy.FSDP: "FULL_SHARD", Strategy.FSDP_SHARD_GRAD_OP: "SHARD_GRAD_OP"}


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'" if value in ("no", "yes", "none", "true", "false") else value
    return str(value)


def _yaml(data: dict[str, object], indent: int = 0) -> list[str]:
    """Block YAML of a flat-or-nested dict, keys sorted (as ``yaml.safe_dump`` writes them)."""
    lines: list[str] = []
    for key in sorted(data):
        value = data[key]
        if isinstance(value, dict):
            lines.append(" " * indent + f"{key}:")
            lines += _yaml(value, indent + 2)
        else:
            lines.append(" " * indent + f"{key}: {_scalar(value)}")
    return lines


def _fsdp_config(parallel: ParallelSpec, grad_ckpt: bool) -> dict[str, object]:
    s = parallel.strategy
    cfg = engine_defaults()
    out: dict[str, object] = {
        "fsdp_activation_checkpointing": grad_ckpt,
        "fsdp_auto_wrap_policy": cfg["fsdp"]["auto_wrap_policy"],
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": parallel.offload is Offload.PARAMS,
        "fsdp_state_dict_type": "SHARDED_STATE_DICT",
    }
    if s is Strategy.FSDP2:
        out.update(fsdp_version=2, fsdp_reshard_after_forward=bool(cfg["fsdp2"]["reshard_after_forward"]))
    else:
        out.update(fsdp_version=1, fsdp_reshard_after_forward=_FSDP1_SHARDING[s],
                   fsdp_backward_prefetch=cfg["fsdp"]["backward_prefetch"],
                   fsdp_forward_prefetch=bool(cfg["fsdp"]["forward_prefetch"]),
                   fsdp_use_orig_params=bool(cfg["fsdp"]["use_orig_params"]),
                   fsdp_sync_module_states=True)
    return out


def _deepspeed_config(parallel: ParallelSpec, grad_accum: int) -> dict[str, object]:
    stage = _ZERO_STAGE[parallel.strategy]
    out: dict[str, object] = {"zero_stage": stage, "gradient_accumulation_steps": grad_accum,
                              "gradient_clipping": 1.0, "zero3_init_flag": stage == 3}
    if stage >= 2:
        out["offload_optimizer_device"] = "cpu" if parallel.offload is not Offload.NONE else "none"
        out["offload_param_device"] = "cpu" if parallel.offload is Offload.PARAMS else "none"
    if stage == 3:
        out["zero3_save_16bit_model"] = True
    if parallel.nodes > 1:
        out["deepspeed_multinode_launcher"] = "standard"
    return out


def deepspeed_json(parallel: ParallelSpec, *, micro_batch: int, grad_accum: int, dtype: DType) -> dict[str, object]:
    """The ``ds.json`` of a ZeRO plan (keys of DeepSpeed's config docs, deepspeed.ai/docs/config-json, and
    ``deepspeed/runtime/zero/config.py`` ``DeepSpeedZeroConfig``; bucket sizes left at DeepSpeed's defaults, as
    accelerate's ``DeepSpeedPlugin`` leaves them and the estimate assumes)."""
    stage = _ZERO_STAGE[parallel.strategy]
    # Bucket sizes and overlap_comm at DeepSpeed's defaults, as the accelerate.yaml path runs them (accelerate's
    # DeepSpeedPlugin names none), so both launch paths are the step the estimate models.
    zero: dict[str, object] = {"stage": stage, "contiguous_gradients": True}
    if parallel.offload is not Offload.NONE:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if parallel.offload is Offload.PARAMS and stage == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        zero.update(stage3_gather_16bit_weights_on_model_save=True)
    return {"zero_optimization": zero, "bf16": {"enabled": dtype is DType.BF16},
            "fp16": {"enabled": dtype is not DType.BF16}, "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": grad_accum, "gradient_clipping": 1.0}


def torchrun_command(parallel: ParallelSpec) -> str:
    """The torchrun alternative to ``accelerate launch`` for a DeepSpeed plan (``--deepspeed ds.json``)."""
    per = parallel.world_size // parallel.nodes
    if parallel.nodes == 1:
        return f"torchrun --nproc-per-node {per} {SCRIPT} --deepspeed ds.json"
    return (f"torchrun --nnodes {parallel.nodes} --node-rank RANK --nproc-per-node {per} --rdzv-backend c10d "
            f"--rdzv-endpoint MAIN_NODE_IP:29500 {SCRIPT} --deepspeed ds.json"
            f"  # on each node, RANK = 0..{parallel.nodes - 1}")


def accelerate_config(parallel: ParallelSpec, *, grad_accum: int, grad_ckpt: bool, dtype: DType) -> str:
    """The ``accelerate.yaml`` of a multi-GPU plan (machine 0's copy: set ``machine_rank`` on the others)."""
    s = parallel.strategy
    data: dict[str, object] = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "downcast_bf16": "no",
        "enable_cpu_affinity": False,
        "machine_rank": 0,
        "main_training_function": "main",
        "mixed_precision": "bf16" if dtype is DType.BF16 else "fp16",
        "num_machines": parallel.nodes,
        "num_processes": parallel.world_size,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    if parallel.nodes > 1:
        data.update(main_process_ip="MAIN_NODE_IP", main_process_port=29500)
    if s.is_fsdp:
        data.update(distributed_type="FSDP", fsdp_config=_fsdp_config(parallel, grad_ckpt))
    elif s.is_zero:
        data.update(distributed_type="DEEPSPEED", deepspeed_config=_deepspeed_config(parallel, grad_accum))
    else:
        data.update(distributed_type="MULTI_GPU")
    head = [f"# accelerate launch --config_file {CONFIG_FILE} {SCRIPT}  ({parallel.strategy.value}, "
            f"{parallel.world_size} GPUs)"]
    if s.is_fsdp and grad_ckpt:
        head.append("# FSDP checkpoints activations itself: set gradient_checkpointing=False in SFTConfig")
    return "\n".join(head + _yaml(data)) + "\n"


def launch_command(parallel: ParallelSpec) -> str:
    """The exact command to start the plan (one line per node across nodes)."""
    base = f"accelerate launch --config_file {CONFIG_FILE}"
    if parallel.nodes == 1:
        return f"{base} {SCRIPT}"
    return (f"{base} --num_machines {parallel.nodes} --machine_rank RANK --main_process_ip MAIN_NODE_IP "
            f"--main_process_port 29500 {SCRIPT}  # on each node, RANK = 0..{parallel.nodes - 1}")
