"""How work is spread over processes: each strategy's options under its own name."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from optiforge.config.base import Config


class DataParallelConfig(Config):
    """``ddp``: options passed to ``DistributedDataParallel``."""

    bucket_cap_mb: float = Field(25.0, gt=0.0, description="gradients all-reduced together, in MiB (DDP's default)")
    gradient_as_bucket_view: bool = Field(True, description="gradients are views into the buckets: one copy fewer")
    static_graph: bool = Field(False, description="the same parameters are used at every step (DDP may cache)")


class ShardingConfig(Config):
    """``fsdp`` and ``hybrid`` with ``inner: shard``."""

    cpu_offload: bool = Field(False, description="shards and optimizer state in host memory")


class PipelineConfig(Config):
    """``pipeline`` and ``hybrid`` with ``inner: pipeline``."""

    microbatches: int = Field(4, ge=1, description="slices of each batch")
    schedule: Literal["gpipe", "1f1b"] = "gpipe"
    split_points: list[str] = Field(default_factory=list, description="top-level module names where stages begin")


class TensorParallelConfig(Config):
    """``tensor`` and ``hybrid`` with ``inner: tensor``."""

    plan: dict[str, Literal["colwise", "rowwise"]] = Field(
        default_factory=dict, description="Linear module name -> split (default: every Linear pair)"
    )


class HybridConfig(Config):
    """``hybrid``: a 2-D mesh of data-parallel rows times an inner strategy."""

    mesh: list[int] = Field(default_factory=list, description="mesh shape, e.g. [2, 2]")
    inner: Literal["shard", "tensor", "pipeline"] = Field("shard", description="what the mesh's second dimension does")


class ParallelConfig(Config):
    """How work is spread over processes; ``none`` is one process.

    Each strategy's options sit under its own name; ``hybrid`` also reads the options of its inner strategy.
    """

    renamed_fields: ClassVar[dict[str, str]] = {
        "microbatches": "pipeline.microbatches",
        "schedule": "pipeline.schedule",
        "split_points": "pipeline.split_points",
        "plan": "tensor.plan",
        "mesh": "hybrid.mesh",
        "inner": "hybrid.inner",
        "cpu_offload": "fsdp.cpu_offload",
    }

    strategy: Literal["none", "ddp", "fsdp", "pipeline", "tensor", "hybrid"] = "none"
    ddp: DataParallelConfig = DataParallelConfig()
    fsdp: ShardingConfig = ShardingConfig()
    pipeline: PipelineConfig = PipelineConfig()
    tensor: TensorParallelConfig = TensorParallelConfig()
    hybrid: HybridConfig = HybridConfig()
    max_restarts: int = Field(0, ge=0)
    port: int | None = Field(None, ge=1, le=65535, description="--nproc: rendezvous port (default: a free one)")
