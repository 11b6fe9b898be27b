from conn_executor.main import run

run()
