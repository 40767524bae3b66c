"""mod_wsgi entry point: binds the gateway to its configuration file (absolute path, read once at start).

    lockllm-wsgi apache-config --config /etc/lockllm/lockllm.ini --write-script   # writes this file, path filled in
    WSGIScriptAlias /llm /etc/lockllm/lockllm.wsgi
"""
from lockllm_wsgi import create_app

# The path is written here, not taken from SetEnv: Apache's variables reach each request's environ, never
# os.environ, and the app is configured once at start-up.
CONFIG = "/etc/lockllm/lockllm.ini"

application = create_app(CONFIG)
