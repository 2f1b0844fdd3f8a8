"""Event replay for debugging: history, live tail, causal traces and dead letters, read-only.

Nothing here uses a durable consumer or acks anything: reading history changes no state and
triggers no handler. Only :func:`~fog_shared.replay.deadletters.redrive` writes, and only to hand
one parked event back to the one consumer that parked it.
"""
