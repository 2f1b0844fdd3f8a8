"""Events published by the messaging service (stream ``EVT_MESSAGING``).

Declared here as the messaging service grows its behaviour; see docs/architecture.md for the plan.
"""
