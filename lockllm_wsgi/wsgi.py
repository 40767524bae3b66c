"""`application` for mod_wsgi, built from the INI file named by LOCKLLM_WSGI_CONFIG.

The shipped apache/lockllm.wsgi names its config path itself (SetEnv reaches the request environ, not
os.environ); this module serves `mod_wsgi-express start-server lockllm_wsgi/wsgi.py` and other servers, where the
variable is set in the process environment::

    LOCKLLM_WSGI_CONFIG=/etc/lockllm/lockllm.ini mod_wsgi-express start-server --application-type module lockllm_wsgi.wsgi
"""

import os

from . import wsgi_application

# A configuration that cannot be loaded answers every request with a JSON 503 naming the problem (unavailable.py).
application = wsgi_application(os.environ.get("LOCKLLM_WSGI_CONFIG", "(LOCKLLM_WSGI_CONFIG is not set)"))
