"""Valves: LoRA deltas applied at strength α (``apply``). Training and extraction come later."""
from cotbench.valve.apply import attach_valve, describe_valve, valve_fingerprint, valve_strength

__all__ = ["attach_valve", "valve_strength", "valve_fingerprint", "describe_valve"]
