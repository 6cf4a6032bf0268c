"""The pure pipeline: topology text in, plan and per-host files out. No I/O, no clock."""
