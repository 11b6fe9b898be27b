"""conn_executor."""
