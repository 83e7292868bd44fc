"""Prometheus metrics computed from the flow store, named like Hubble's.

* :mod:`podflow.metrics.registry`: the explicit registry of handlers (``HANDLERS``) and
  :class:`~podflow.metrics.registry.MetricSet`, the handlers chosen by an options string;
* :mod:`podflow.metrics.context`: the Hubble-style options syntax and source/destination
  context labels;
* :mod:`podflow.metrics.follower`: the thread that follows the store and feeds the handlers,
  counting each connection once;
* :mod:`podflow.metrics.asgi`: :func:`~podflow.metrics.asgi.metrics_app`, the ``/metrics``
  ASGI application.

Nothing is registered or started at import time.
"""
