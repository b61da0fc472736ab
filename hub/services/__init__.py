"""Use cases shared by the API views and the CLI. Views stay thin; the rules live here."""
