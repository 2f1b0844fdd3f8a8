"""Events published by the scheduler service (stream ``EVT_SCHEDULER``).

Declared here as the scheduler service grows its behaviour; see docs/architecture.md for the plan.
"""
