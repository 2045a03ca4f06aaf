"""Telegram, directly: the Bot API client, parsing updates, laying out replies."""
