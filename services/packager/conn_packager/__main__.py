from conn_packager.main import run

run()
