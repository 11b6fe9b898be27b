from conn_api.main import run

run()
