from fraudstream.cli import app

app(prog_name="fraudstream")
