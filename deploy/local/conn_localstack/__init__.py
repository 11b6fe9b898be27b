"""conn_localstack."""
