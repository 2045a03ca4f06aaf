"""Channel adapters: parse a webhook into an InboundMessage, send an OutboundMessage."""
