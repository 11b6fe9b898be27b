"""conn_api."""
