"""Video visits: a meeting for every booking of a video service (Daily rooms, Zoom
meetings), created, moved and deleted by a job that follows the booking's changes.
See ``meetings`` for the guarantees.
"""
