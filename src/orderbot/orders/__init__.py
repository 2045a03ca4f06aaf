"""Orders: records and read models, the status machine, alerts to operators, reading orders."""
