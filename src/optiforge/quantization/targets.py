"""What a quantized model must keep: the user's ``target``, or ``engine: auto``'s default cosine floor."""

from __future__ import annotations

from optiforge.quantization.config import QuantConfig

# with engine: auto and no target, a candidate must keep this output cosine to the float model
AUTO_MIN_FIDELITY = 0.99


def target(config: QuantConfig) -> tuple[float | None, float | None]:
    """(largest metric drop, least output cosine) a candidate must meet."""
    if config.has_target:
        return config.target.max_metric_drop, config.target.min_fidelity
    return None, AUTO_MIN_FIDELITY


def target_text(config: QuantConfig) -> str:
    max_metric_drop, min_fidelity = target(config)
    parts = [f"metric drop <= {max_metric_drop:g}"] if max_metric_drop is not None else []
    if min_fidelity is not None:
        parts.append(f"output cosine >= {min_fidelity:g}")
    return " and ".join(parts)
