"""conn_adapters."""
