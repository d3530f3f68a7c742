"""The HTTP side of `chatops serve`: Slack's requests acknowledged at once, alerts, metrics, liveness."""
