"""Who may use the server, and how much: API keys, rate limits, megapixel quotas and usage.

The HTTP layer turns a presented key into a :class:`~fluxserve.accounts.keys.Caller`; the job
service asks :class:`~fluxserve.accounts.admission.Admission` whether that caller may queue one
more job before it does. Everything is kept in the server's database (SQLite or Postgres).
"""
