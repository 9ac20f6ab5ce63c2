"""The job service: Flask API (server.app.create_app), database models, auth, storage."""
