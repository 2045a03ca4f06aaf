"""HTTP: the webhook ingress (a lean ASGI path) and the FastAPI app for everything else."""
