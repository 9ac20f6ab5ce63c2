"""Celery worker: claims jobs, launches and supervises training and export, registers artifacts."""
