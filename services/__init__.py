"""User profiles and personal access tokens, as event-driven services."""
