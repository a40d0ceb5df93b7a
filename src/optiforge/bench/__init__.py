"""Measurement and reports: the one place figures are taken."""

from optiforge.bench.measure import Measurement, measure

__all__ = ["Measurement", "measure"]
