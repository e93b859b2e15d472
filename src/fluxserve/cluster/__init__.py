"""fluxserve on a Ray cluster (the ``ray`` extra): ``fluxserve serve --ray``.

- :mod:`~fluxserve.cluster.plan`: what each deployment asks Ray for (plain data, no Ray import);
- :mod:`~fluxserve.cluster.autoscaling`: the policy that sizes a model deployment on its queue;
- :mod:`~fluxserve.cluster.deployments`: the Ray Serve deployments (model replicas, HTTP ingress)
  and :func:`~fluxserve.cluster.deployments.run_on_ray`.

Only ``deployments`` imports Ray.
"""
