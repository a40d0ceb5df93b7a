"""Model compression: pruning (unstructured and structured), weight sharing,
low-rank factorisation and the packed file format that stores the result.

Each technique is a config plus a verb that takes and returns an ``nn.Module``;
recipe stages ``prune``, ``share`` and ``factorize`` parse into the same configs.
"""

from optiforge.compress.common import (
    CompressionResult,
    FactorizeResult,
    PruneResult,
    ShareResult,
    weight_sparsity,
)
from optiforge.compress.config import FactorizeConfig, GradualConfig, PruneConfig, ShareConfig, StructuredConfig
from optiforge.compress.lowrank import factorize, factorize_with_result
from optiforge.compress.packed import PackedFileError, describe_packed, load_packed, read_packed_tensors, write_packed
from optiforge.compress.pruning import prune, prune_with_result
from optiforge.compress.sharing import share, share_with_result

__all__ = [
    "CompressionResult",
    "FactorizeConfig",
    "FactorizeResult",
    "GradualConfig",
    "PackedFileError",
    "PruneConfig",
    "PruneResult",
    "ShareConfig",
    "ShareResult",
    "StructuredConfig",
    "describe_packed",
    "factorize",
    "factorize_with_result",
    "load_packed",
    "prune",
    "prune_with_result",
    "read_packed_tensors",
    "share",
    "share_with_result",
    "weight_sparsity",
    "write_packed",
]
