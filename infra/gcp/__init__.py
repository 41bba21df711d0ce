"""Google Cloud components. Each is one ComponentResource with typed args and parented children."""
