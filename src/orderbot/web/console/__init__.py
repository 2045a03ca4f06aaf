"""The shop's web console (``/console``): operator accounts and sessions, the orders board and
order pages, conversations with a person, dead letters, numbers and the CSV export. Served by
``orderbot run`` and ``orderbot serve`` alike; pages are rendered on the server (Jinja2) with a
little JavaScript of our own, no frontend build. See docs/console.md."""
