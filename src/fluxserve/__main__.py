import sys

from fluxserve.cli.main import main

sys.exit(main())
