"""Building blocks shared by the services: config, database, events, auth."""
