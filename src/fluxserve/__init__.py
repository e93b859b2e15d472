"""fluxserve: a self-hosted server for FLUX image models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fluxserve")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
