"""``fluxserve serve``: build the app from the settings and run it under uvicorn, or (``--ray``) on Ray Serve."""

from __future__ import annotations

import contextlib
import logging

from fluxserve.settings import Settings
from fluxserve.telemetry import logs


def run_server(settings: Settings) -> None:
    import uvicorn

    from fluxserve.api.app import create_app
    from fluxserve.api.server import server_config

    logs.configure(settings.log_format)
    log = logging.getLogger("fluxserve")
    log.info("data in %s; models: %s", settings.data_dir, ", ".join(settings.models))
    app = create_app(settings)  # refuses a server that would be open to a network by accident
    log.info("serving on http://%s:%d (OpenAPI at /docs)", settings.host, settings.port)
    server = uvicorn.Server(server_config(app, settings))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: the Ctrl-C it shut down on is raised again
        server.run()
    if not server.started:  # as uvicorn.run: the port was taken, or start-up failed
        raise SystemExit(3)


def run_on_ray(settings: Settings) -> None:
    """``serve --ray``: deploy on Ray Serve (see :mod:`fluxserve.cluster.deployments`) until interrupted."""
    from fluxserve.cluster.plan import check_shared_store

    check_shared_store(settings)  # a clear error before Ray is imported, or started
    from fluxserve.cluster.deployments import run_on_ray as deploy

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    deploy(settings)
