from herder.arq.cli import cli

cli()
