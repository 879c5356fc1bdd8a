"""The tuner service: a REST API over a fleet of filters tuned by a periodic loop.

``python -m tuner.service`` runs it; :func:`tuner.service.app.create_app` builds the
application from :class:`tuner.service.settings.Settings`.
"""
