"""Dialog state and the atomic commit of one dialog step."""
