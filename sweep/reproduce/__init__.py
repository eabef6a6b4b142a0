"""Reproductions of the thesis's results: Table 4 (accuracy), Table 3 (timings), Figures 8/10 (evolution)."""

from .common import OUR_SETTINGS, THESIS_SETTINGS
from .evolution import run_evolution
from .table3 import run_table3
from .table4 import run_table4

__all__ = ["OUR_SETTINGS", "THESIS_SETTINGS", "run_evolution", "run_table3", "run_table4"]
