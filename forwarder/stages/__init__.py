"""Pipeline stages: one small class per step a query passes through (see pipeline.py)."""
