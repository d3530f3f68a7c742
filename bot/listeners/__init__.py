"""Bolt listeners: slash commands, the gate's buttons and modal, incident and alert buttons."""
