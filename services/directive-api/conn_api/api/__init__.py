"""The API's routes, one module per resource (mounted by `conn_api.routes`)."""
