"""The profile service: users, roles, passwords and sign-in sessions."""
