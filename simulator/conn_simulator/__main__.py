from conn_simulator.main import run

run()
