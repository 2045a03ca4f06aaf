"""Model files: receiving attachments, downloading them, checking their format by content."""
