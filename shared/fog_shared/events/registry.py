"""Events published by the registry service (stream ``EVT_REGISTRY``).

Declared here as the registry service grows its behaviour; see docs/architecture.md for the plan.
"""
