"""modelhost's reference model app: a gensim word-embedding service.

``create_app()`` is the WSGI entry point (``gunicorn 'app:create_app()'``). It is imported lazily
so that ``python -m app.model`` does not load Flask and the whole app first.
"""


def create_app(config: dict | None = None):
    """Build the Flask app; see app.factory.create_app."""
    from app.factory import create_app as build

    return build(config)
