"""Field feedback: corrections sent from the web page or the API, stored in a database (SQLite or
PostgreSQL, schema by Alembic), summarised (`seedlings feedback stats`) and exported in the training layout
(`seedlings feedback export`) for the next fine-tune. No torch here: the service imports it."""
