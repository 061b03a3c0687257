"""Reports: summary tables, curves, report.md and the leaderboard, all rebuilt from a run's store."""
from cotbench.report.outputs import write_run_outputs

__all__ = ["write_run_outputs"]
