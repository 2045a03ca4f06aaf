"""Fakes at the seams: a fake Chat2Desk HTTP server and an in-memory outbox."""
