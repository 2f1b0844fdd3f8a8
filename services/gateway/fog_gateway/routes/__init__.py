"""The gateway's ``/v1`` routes, one module per area."""
