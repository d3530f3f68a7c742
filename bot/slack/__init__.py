"""How the bot writes to Slack: within its limits, with its errors named, into incident threads."""
