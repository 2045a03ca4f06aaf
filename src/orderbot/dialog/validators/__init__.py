"""Named, reusable validators of what a customer writes, and the values they share."""
