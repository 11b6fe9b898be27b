"""conn_runtime."""
