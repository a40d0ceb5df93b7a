"""Model compression: pruning (unstructured and structured), weight sharing,
low-rank factorisation and the packed file format that stores the result.

Each technique is a config plus a verb that takes and returns an ``nn.Module``;
recipe stages ``prune``, ``share`` and ``factorize`` parse into the same configs.
"""

from optiforge.compress.common import applied, weight_sparsity
from optiforge.compress.config import (
    FactorizeConfig,
    GradualConfig,
    LayerSelection,
    PruneConfig,
    ShareConfig,
    StructuredConfig,
)
from optiforge.compress.lowrank import factorize
from optiforge.compress.packed import PackedFileError, describe_packed, load_packed, read_packed_tensors, write_packed
from optiforge.compress.pruning import prune
from optiforge.compress.sharing import share

__all__ = [
    "FactorizeConfig",
    "GradualConfig",
    "LayerSelection",
    "PackedFileError",
    "PruneConfig",
    "ShareConfig",
    "StructuredConfig",
    "applied",
    "describe_packed",
    "factorize",
    "load_packed",
    "prune",
    "read_packed_tensors",
    "share",
    "weight_sparsity",
    "write_packed",
]
