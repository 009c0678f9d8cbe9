"""The HTTP service over a search index: JSON API, thumbnails and a web page.

``create_app(index_dir)`` returns the FastAPI application (for tests or another ASGI server);
``run_server(index_dir, host, port, token)`` serves it with uvicorn.
"""

from personvl.serve.app import create_app, run_server
from personvl.serve.limits import ServiceLimits

__all__ = ["ServiceLimits", "create_app", "run_server"]
