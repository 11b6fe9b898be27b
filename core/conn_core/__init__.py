"""conn_core."""
