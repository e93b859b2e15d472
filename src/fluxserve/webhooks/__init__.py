"""Webhook delivery for jobs, signed per the Standard Webhooks spec (https://www.standardwebhooks.com/).

The package sits beside :mod:`fluxserve.jobs`: it reads jobs (their models and their client view,
for the event body) and the job service never imports it; the composition root
(:func:`fluxserve.api.app.create_app`) builds the sender and hands it to the service.

- :mod:`~fluxserve.webhooks.secret`: the signing secret, configured or kept in the data dir.
- :mod:`~fluxserve.webhooks.urls`: which webhook URLs a request may name.
- :mod:`~fluxserve.webhooks.addresses`: addresses never posted to; :mod:`~fluxserve.webhooks.client`:
  the HTTP client that connects only to checked addresses.
- :mod:`~fluxserve.webhooks.signing`: the signed headers; :mod:`~fluxserve.webhooks.payload`: the body.
- :mod:`~fluxserve.webhooks.attempts`: one POST and its outcome; :mod:`~fluxserve.webhooks.retries`:
  what follows it (done, retried with backoff, failed).
- :mod:`~fluxserve.webhooks.deliveries`: the ``webhook_deliveries`` table.
- :mod:`~fluxserve.webhooks.sender`: the scheduler and sender threads.
- :mod:`~fluxserve.webhooks.logs`: webhook URLs in logs, shown by their origin only.

Importing any of them does nothing else: the log filter is installed when a sender starts.
"""
