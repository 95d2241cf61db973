"""Commands an operator runs beside a serving forwarder: `forwarder health` (the
container's health probe) and `forwarder replay` (what a policy change would do)."""
