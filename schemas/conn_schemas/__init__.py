"""conn_schemas."""
