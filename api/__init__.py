"""HTTP API (FastAPI), approval workflow and the `blueprint` command line."""
