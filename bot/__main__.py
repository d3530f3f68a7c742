"""Run the CLI as `python -m bot`."""

from bot.cli import entrypoint

entrypoint()
