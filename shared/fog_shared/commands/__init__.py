"""Request/reply contracts (``fog.cmd.*``/``fog.qry.*``): one module per answering service."""
