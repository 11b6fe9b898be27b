"""conn_verifier."""
