"""The peer stack: python-socketio + Celery with a Redis broker, running the same job."""
