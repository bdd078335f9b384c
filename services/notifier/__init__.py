"""The notifier service: emails people about their tokens."""
