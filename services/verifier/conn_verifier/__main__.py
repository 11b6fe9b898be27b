from conn_verifier.main import run

run()
