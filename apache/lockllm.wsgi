"""mod_wsgi entry point: binds the gateway to its configuration file (absolute path, read once at start).

    lockllm-wsgi apache-config --config /etc/lockllm/lockllm.ini --write-script   # writes this file, path filled in
    WSGIScriptAlias /llm /etc/lockllm/lockllm.wsgi
"""
from lockllm_wsgi import wsgi_application

# The path is written here, not taken from SetEnv: Apache's variables reach each request's environ, never
# os.environ, and the app is configured once at start-up.
CONFIG = "/etc/lockllm/lockllm.ini"

# A configuration that cannot be loaded (a bad edit before `apachectl -k graceful`) does not fail this import:
# every request is answered with a JSON 503 naming the problem, which is logged once.
application = wsgi_application(CONFIG)
