"""The tokens service: personal access tokens, their validation and expiry."""
