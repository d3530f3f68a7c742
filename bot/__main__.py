"""Run the CLI as `python -m bot`."""

from bot.cli.main import entrypoint

entrypoint()
