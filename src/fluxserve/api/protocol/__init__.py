"""The wire format, one module per resource: every request, response and event body as a pydantic model.

``images`` (generations and edits, and their stream events), ``jobs`` (job lists and the job
event stream; the job itself is :class:`fluxserve.jobs.views.JobView`, which webhooks send too),
``models``, ``keys``, ``usage``, ``rules``, ``health`` and ``errors``; ``query`` reads query
parameters. Handlers build these and dump them; nothing on the wire is a hand-built dict.
"""
